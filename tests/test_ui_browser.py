"""The users' main path in a real browser: Prefect's run form -> worker -> MLflow champion.

`ganops up` starts, in a scratch checkout on free ports, a Prefect server, an MLflow server,
the work pool, the deployments and a worker. Headless Chromium then does what a person does:
opens the pipeline deployment, Run > Custom run, picks a family, a preset and a data source
from the form's selects, sets the step count, submits. The run must complete on the worker
and MLflow's REST API must show the trained model as the registered model's champion.

The scratch checkout's params files hold tiny settings (8x8 scikit-learn digits, a few steps,
`flows.bench.TINY`) and a tiny preset, `dcgan-digits-tiny`, that the form lists beside the
others, so the run takes about a minute of CPU.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import json
import re
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from browser import artifacts_dir, chromium, offline
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.bench import TINY, scratch_project
from flows.paramfiles import TRAIN_SECTIONS, apply_pipeline_params
from flows.params import PipelineParams
from gan_models import services
from gan_models.tracking.server import free_port

pytestmark = pytest.mark.slow

PRESET = "dcgan-digits-tiny"
STEPS = 6  # the preset says 4: the form's value must win


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    project = scratch_project(root / "proj")
    apply_pipeline_params(project, PipelineParams(overrides=TINY))  # tiny data, features, eval
    train = yaml.safe_load((project / "params/train.yaml").read_text())
    (project / f"params/{PRESET}.yaml").write_text(
        "# A few steps of DCGAN on 8x8 digits: the browser test's preset.\n"
        + yaml.safe_dump({s: train[s] for s in TRAIN_SECTIONS}, sort_keys=False)
    )
    old = os.environ.get("GANOPS_CACHE_DIR")
    os.environ["GANOPS_CACHE_DIR"] = str(root / "cache")  # the worker's flow runs inherit it
    ports = {"prefect": free_port(), "mlflow": free_port()}
    try:
        services.up(
            project, prefect_port=ports["prefect"], mlflow_port=ports["mlflow"], limit=1,
            timeout=300, echo=lambda _: None,
        )  # fmt: skip
        yield project, ports
    finally:
        services.down(project, echo=lambda _: None)
        if old is None:
            os.environ.pop("GANOPS_CACHE_DIR", None)
        else:
            os.environ["GANOPS_CACHE_DIR"] = old


def field(page, name):
    """One parameter of Prefect's schema form, found by its label ("steps (Optional)")."""
    label = page.locator(".schema-form-property__label", has_text=re.compile(f"^{name} "))
    return page.locator(".schema-form-property").filter(has=label)


def choose(page, name, value):
    """Open a select of the form and click one of its options."""
    control = field(page, name).locator(".p-select-button__control")
    shown = field(page, name).locator(".p-select-button__value")
    option = page.get_by_role("option", name=value, exact=True)
    # On a loaded machine a click can land while the form re-renders and pick nothing: open the
    # select and pick again, a few times, before judging what it shows.
    for _ in range(3):
        control.click()
        try:
            option.wait_for(timeout=3000)
        except Exception:  # the select opens on a key press when the click only focused it
            control.press("ArrowDown")
        option.click()
        try:
            page.wait_for_function(
                "([el, v]) => el.innerText.trim() === v",
                arg=[shown.element_handle(), value],
                timeout=5000,
            )
            break
        except Exception:  # noqa: BLE001 - not shown yet: try the select again
            continue
    assert shown.inner_text().strip() == value


def wait_for_flow_run(api, run_id, timeout_s=900):
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(3)
    raise AssertionError(f"flow run {run_id} did not finish in {timeout_s} s")


def test_a_person_runs_the_pipeline_from_the_prefect_form(stack):
    project, ports = stack
    base = f"http://127.0.0.1:{ports['prefect']}"
    with urllib.request.urlopen(f"{base}/api/deployments/name/pipeline/pipeline") as r:
        deployment = json.load(r)
    shot = artifacts_dir() / "prefect-run-form.png"
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1300})
        offline(context)
        page = context.new_page()
        page.goto(f"{base}/deployments/deployment/{deployment['id']}", wait_until="networkidle")
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run", exact=True).click()
        page.wait_for_url(re.compile(r"/run(\?|$)"))

        # The choices are selects listing the zoo, the presets and the sources; the knobs
        # are number inputs.
        field(page, "family").locator(".p-select").wait_for(timeout=60_000)  # form rendered
        for name in ("family", "preset", "source", "tune"):
            assert field(page, name).locator(".p-select").count() == 1, name
        choose(page, "family", "dcgan")
        choose(page, "preset", PRESET)
        choose(page, "source", "digits")
        steps = field(page, "steps")
        steps.get_by_role("button", name="int", exact=True).click()
        steps.locator("input[type=number]").fill(str(STEPS))
        page.screenshot(path=str(shot), full_page=True)

        with page.expect_response(lambda r: r.url.endswith("/create_flow_run")) as created:
            page.get_by_role("button", name="Submit").click()
        assert created.value.status == 201, created.value.text()
        run_id = created.value.json()["id"]
        page.wait_for_url(re.compile(r"tab=Runs|/flow-runs/"))
        context.close()
    assert shot.stat().st_size > 10_000

    run = wait_for_flow_run(f"{base}/api", run_id)
    worker_log = (project / ".ganops/logs/worker.log").read_text()[-3000:]
    assert run.state.is_completed(), f"{run.state.message}; worker log:\n{worker_log}"
    given = {k: run.parameters.get(k) for k in ("family", "preset", "source", "steps")}
    assert given == {"family": "dcgan", "preset": PRESET, "source": "digits", "steps": STEPS}
    trained = yaml.safe_load((project / "runs/train/config.yaml").read_text())
    assert trained["model"]["family"] == "dcgan" and trained["train"]["steps"] == STEPS

    # MLflow's REST API, as any client sees the registry: the model is the champion.
    query = urllib.parse.urlencode({"name": "dcgan-digits", "alias": "champion"})
    url = f"http://127.0.0.1:{ports['mlflow']}/api/2.0/mlflow/registered-models/alias?{query}"
    with urllib.request.urlopen(url) as r:
        version = json.load(r)["model_version"]
    run_ref = json.loads((project / "runs/train/mlflow_run.json").read_text())
    assert version["version"] == "1" and version["run_id"] == run_ref["run_id"]


# DVC's first series colour (dvc_render's default colour scheme): a curve drawn in it.
CURVE_RGB = (0x94, 0x5D, 0xD6)


def rendered_charts(page):
    """Per vega chart of the page: its drawn size and how many pixels carry the curve colour."""
    return page.evaluate(
        """([r, g, b]) => [...document.querySelectorAll('.vega-embed')].map(el => {
            const c = el.querySelector('canvas');
            if (!c) return {w: 0, h: 0, curve: 0};
            const box = c.getBoundingClientRect();
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let curve = 0;
            for (let i = 0; i < d.length; i += 4) {
                const near = Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b);
                curve += d[i + 3] > 200 && near < 60;
            }
            return {w: box.width, h: box.height, curve: curve};
        })""",
        list(CURVE_RGB),
    )


def test_dvc_plots_page_draws_the_curves_offline(stack, tmp_path):
    """`dvc plots show` with the project's template: vega scripts inlined, no network needed."""
    import functools
    import http.server
    import subprocess
    import threading

    from flows.runner import project_env

    project = stack[0]
    assert (project / "runs/train/curves/fid.csv").read_text().count("\n") >= 3  # the run above
    out = tmp_path / "plots"
    proc = subprocess.run(
        ["dvc", "plots", "show", "-o", str(out)], cwd=project, env=project_env(project),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "vega-embed/build/vega-embed.min.js 6" in html
    n_vega = html.count("vegaEmbed('#")
    assert n_vega >= 2  # the loss and FID curves at least

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = {"file": (out / "index.html").as_uri(),
            "http": f"http://127.0.0.1:{server.server_address[1]}/index.html"}  # fmt: skip
    try:
        with chromium() as browser:
            for how, url in urls.items():
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                refused = offline(context)
                page = context.new_page()
                problems = []
                page.on("pageerror", lambda e, p=problems: p.append(f"page error: {e}"))
                page.on(
                    "console",
                    lambda m, p=problems: (
                        p.append(f"console: {m.text}") if m.type == "error" else None
                    ),
                )
                page.on("requestfailed", lambda r, p=problems: p.append(f"failed: {r.url}"))
                page.goto(url, wait_until="load")
                page.wait_for_function(
                    f"document.querySelectorAll('.vega-embed canvas').length >= {n_vega}",
                    timeout=30_000,
                )
                charts = rendered_charts(page)
                page.screenshot(path=str(artifacts_dir() / f"dvc-plots-{how}.png"), full_page=True)
                context.close()
                assert refused == [] and problems == [], (how, refused, problems)
                assert len(charts) == n_vega, (how, charts)
                assert all(c["w"] > 100 and c["h"] > 50 and c["curve"] > 300 for c in charts), (
                    how, charts,
                )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
