"""Pieces shared by every sidekick program. Nothing here imports ship, sync or pod."""
