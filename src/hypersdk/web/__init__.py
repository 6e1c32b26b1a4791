"""The dashboard's static files, served at / (no CDN: everything it needs is here)."""
