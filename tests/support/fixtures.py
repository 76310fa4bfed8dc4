"""Fixture registry: each support module's fixtures are re-exported here so conftest stays one line."""
from tests.support.real_comfyui import *  # noqa: F401,F403
from tests.support.bridge_fixtures import *  # noqa: F401,F403
from tests.support.double import *  # noqa
from tests.support.tiny_style_models import *  # noqa: F401,F403
from tests.support.seaweed import s3_server  # noqa: F401
from tests.support.postgres import job_database, pg_url, postgres_server  # noqa: F401
