"""Every table of every domain, registered on ``nexus.storage.base.Base.metadata``.

Alembic's environment and the schema tests import this module to see the whole schema. Add a
domain's models here when the domain gets tables.
"""

from nexus.emotion import schemas as emotion_schemas
from nexus.evolution import health as evolution_health
from nexus.evolution import models as evolution_models
from nexus.experiments import models as experiments_models
from nexus.funnels import models as funnels_models
from nexus.pages import models as pages_models
from nexus.privacy import models as privacy_models
from nexus.security import models as security_models
from nexus.storage.base import Base
from nexus.workspaces import models as workspaces_models

metadata = Base.metadata

__all__ = [
    "emotion_schemas",
    "evolution_health",
    "evolution_models",
    "experiments_models",
    "funnels_models",
    "metadata",
    "pages_models",
    "privacy_models",
    "security_models",
    "workspaces_models",
]
