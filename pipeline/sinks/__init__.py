"""Where results go: tables and JSON, the match log, annotated video, and alerts (webhooks, MQTT)."""
