"""Preheats: Harbor's legacy (/preheats) and Dragonfly2 Open API (/oapi/v1/jobs) jobs, and its webhook."""
