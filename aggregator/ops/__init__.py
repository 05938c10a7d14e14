"""Operations commands: serve, broker-config, flash, demo, job layout, operator admin."""
