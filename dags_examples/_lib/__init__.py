"""Helpers shared by the example DAGs.

Everything here but :mod:`_lib.storage` is pure Python (no Airflow, no numpy), so it is
unit tested on its own and the DAG files stay short. Airflow puts the DAGs folder on
``sys.path``, which is how the DAG files import ``_lib``; ``.airflowignore`` keeps the
DAG processor from parsing this package as DAGs.
"""
