"""Live cameras: RTSP sources that survive faults, their config and health, the Ray engine, and camera recording."""
