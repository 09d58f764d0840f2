"""HatInferenceService roles: ``cloud`` runs the middle blocks for every device's sequences,
``device`` drafts with the outer blocks and the adapter and serves the OpenAI-compatible
endpoint (:mod:`edgeloom.apps.hat.roles`). The prepare step, the cloud's bounded sessions and
the endpoint are their building blocks; the algorithm is :mod:`edgeloom.algos.hat`."""

from edgeloom.apps.hat import roles

ROLES = {"cloud": roles.cloud, "device": roles.device}
