from provider_daemon.cli import app

app()
