"""Small leaf modules every service uses. Nothing here imports a service."""
