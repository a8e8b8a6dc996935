"""Churn-prediction example shared by the FastAPI and Flask apps.

``data`` builds the deterministic synthetic customer data set; ``model`` trains the production model (v1,
few features) and the candidate model (v2, all features) that the shadow-mode demo compares on live
traffic; ``shadow`` and ``telemetry`` hold the shadow configuration and telemetry setup of the apps.
"""
