"""Operations: status, dashboards and run-time checks of a deployment."""
