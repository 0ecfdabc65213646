"""`make demo` runs the demo federation: its table shows the allowed exchanges and each refusal a gateway must make."""

from __future__ import annotations

from pathlib import Path

from gateway.demo import run_demo


async def test_the_demo_admits_the_certified_and_refuses_the_rest(tmp_path: Path):
    rows = await run_demo(tmp_path, port=0, keep_serving=False)
    by_scene: dict[str, list[tuple[object, str]]] = {}
    for row in rows:
        by_scene.setdefault(row.scene, []).append((row.status, row.edu_status))
    assert by_scene["allowed push"] == [(201, "0001")] * 4
    assert by_scene["allowed pull"] == [(200, "")]
    assert by_scene["unknown CA"] == [("TLS alert", "")]
    assert by_scene["no keurmerk"] == [(400, "0021"), (403, "0099")]
    assert by_scene["suspended"] == [(401, "0099")]
    assert by_scene["stolen token"] == [(401, "0099")]
    assert by_scene["not activated"] == [(403, "0022"), (403, "0022")]
    assert by_scene["BSN as student"] == [(400, "0011")]
    assert by_scene["suspended live"] == [(403, "0099")]
