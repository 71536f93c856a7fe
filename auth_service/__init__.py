"""Auth service: users, passwords, access/refresh tokens, provider API keys, the JWKS."""
