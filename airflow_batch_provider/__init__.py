"""Apache Airflow provider for the OpenAI Batch API."""

#: The one place the version is kept: pyproject.toml and get_provider_info read it.
__version__ = "0.1.0"
