"""`mlops server`: the MLflow tracking server of team mode, started, watched and stopped.

`process` starts and stops the server and records its state under `<home>/server/`;
`auth` turns the users file of `--auth` into MLflow basic-auth users and grants.
"""
