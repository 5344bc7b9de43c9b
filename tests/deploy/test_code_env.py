"""The scan of the sources for the EDGEPM_* variables each package reads."""

from __future__ import annotations

import ast

from tests.deploy.code_env import _names_with_literal_default, scan_package


def test_code_scan_requires_agent_site() -> None:
    scan = scan_package("edge_agent")

    assert "EDGEPM_SITE" in scan.names
    assert "EDGEPM_SITE" not in scan.defaults
    assert "EDGEPM_MQTT_HOST" in scan.defaults


def test_code_scan_skips_child_process_env() -> None:
    # The demo launcher sets EDGEPM_SITE for the agent it starts, in a dict literal.
    scan = scan_package("control_plane")

    assert "EDGEPM_SITE" not in scan.names
    assert "EDGEPM_DATABASE_URL" in scan.names


def test_code_scan_literal_default_cases() -> None:
    tree = ast.parse(
        "environ.get('EDGEPM_A', '5')\n"
        "os.getenv('EDGEPM_B', DEFAULT)\n"
        "environ.get('EDGEPM_C', '')\n"
        "environ.get('EDGEPM_D')\n"
        "_check_range('EDGEPM_E', value, 1, 2)\n"
    )

    assert _names_with_literal_default(tree) == {"EDGEPM_A", "EDGEPM_B"}
