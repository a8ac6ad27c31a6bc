"""Aiming a run at a simulator already serving at SPARC_SIM_URL (`sparc-cloud sim serve --write-creds DIR`)."""

from __future__ import annotations

from sparc_cloud.errors import ConfigError
from sparc_cloud.settings import Settings


def remote_settings(settings: Settings) -> tuple[dict[str, object], float]:
    """Client settings and time scale for the simulator at SPARC_SIM_URL, with the credential files that
    `sim serve --write-creds` wrote into SPARC_SIM_CREDS."""
    import requests

    from sparc_cloud.sim.server import client_settings, credential_paths

    url = (settings.sim_url or "").rstrip("/")
    if settings.sim_creds is None:
        raise ConfigError(f"SPARC_SIM_URL={url} needs SPARC_SIM_CREDS: the folder you gave `sparc-cloud sim serve "
                          "--write-creds DIR` (the simulator only accepts the credentials it wrote).")
    paths = credential_paths(settings.sim_creds)
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"SPARC_SIM_CREDS={settings.sim_creds} has no {' or '.join(missing)}. Start the simulator "
                          f"with `sparc-cloud sim serve --write-creds {settings.sim_creds}`.")
    try:
        answer = requests.get(url + "/_sim/counters", timeout=5)
        scale = float(answer.json()["time_scale"])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        raise ConfigError(f"No sparc-cloud simulator answers at SPARC_SIM_URL={url}. Start one with `sparc-cloud sim "
                          "serve --write-creds DIR`, or unset SPARC_SIM_URL to use one inside the run.") from None
    return client_settings(url, paths), scale
