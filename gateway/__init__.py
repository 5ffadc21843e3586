"""The HTTP face of frontdoor.pki: routes, auth, config and the `frontdoor-gateway` CLI.

No business rules live here: every decision is the engine's (``frontdoor_pki.service``).
"""

__version__ = "0.1.0"
