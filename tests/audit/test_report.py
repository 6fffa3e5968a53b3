"""The HTML report: its numbers against the written rows, and the page in a real headless browser."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from audit.report import render_report
from audit.runs import load_run
from helpers import read_parquet_dir, write_vector_tfrecord
from pipeline.cli import main
from pipeline.config import RunConfig
from pipeline.run import run_attribution

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]
# Injected into a copy of the report: records script errors and whether every image decoded.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || (e.target && e.target.src) || e)), true);
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length;
  document.documentElement.setAttribute("data-probe", JSON.stringify({images: images.length, decoded, errors: window.__errors}));
});
</script>"""


def _image_model(path):
    import keras

    keras.utils.set_random_seed(8)
    model = keras.Sequential([
        keras.Input((4, 4, 1), name="pixels"), keras.layers.Conv2D(4, 2, activation="tanh"), keras.layers.Flatten(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.save(str(path))
    return str(path)


def _run(tmp_path, name, scale):
    rng = np.random.default_rng(3)
    images = (rng.random(size=(240, 16)) * scale).astype(np.float32)
    data = write_vector_tfrecord(tmp_path / f"{name}.tfrecord", images, ids=[f"img{i}" for i in range(240)],
                                 labels=np.arange(240) % 3, feature_name="pixels")
    config = RunConfig.from_mapping({
        "model": str(tmp_path / "cnn.keras"), "input": data, "output": str(tmp_path / name), "key_column": "id",
        "method": "integrated_gradients", "steps": 16, "slice_columns": ["label"],
    })
    run_attribution(config)
    return str(tmp_path / name)


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    _image_model(tmp_path / "cnn.keras")
    return _run(tmp_path, "base", 1.0), _run(tmp_path, "today", 2.0), tmp_path


def test_report_numbers_equal_a_brute_force_pass_over_the_rows(image_runs):
    run_dir = image_runs[1]
    page = render_report(load_run(run_dir))
    rows = read_parquet_dir(run_dir)
    deltas = np.asarray(rows.column("completeness_error").to_pylist())
    scores = np.asarray(rows.column("target_score").to_pylist())
    over = int((deltas > 0.05).sum())
    assert f"{over:,} of {len(deltas):,} rows ({over / len(deltas):.2%}) have a completeness error over 0.05" in page
    assert f"median {np.median(deltas):.3g}" in page
    assert f"mean {scores.mean():.4g}, std {scores.std():.4g}, min {scores.min():.4g}, max {scores.max():.4g}" in page
    assert load_run(run_dir).manifest["model"]["sha256"] in page
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert alts == ["importance map pixels", "per-class maps pixels", "per-slice maps pixels label", "exemplars pixels",
                    "completeness histogram", "prediction distribution"]
    assert "http://" not in page and "https://" not in page  # self-contained


def _browser(page_path, *flags):
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={page_path.parent / 'chromium-profile'}", *flags,
                           page_path.as_uri()], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (Debian package 'chromium'; .ci/run installs it)")
def test_report_loads_in_headless_chromium_with_every_image_rendered(image_runs):
    base, today, tmp_path = image_runs
    out = tmp_path / "report.html"
    assert main(["report", today, "--baseline", base, "--out", str(out)]) == 0
    page = out.read_text()
    assert "Drift against the baseline run" in page and "drift scatter" in page
    probe_copy = tmp_path / "probe.html"
    probe_copy.write_text(page.replace("<head>", "<head>" + PROBE, 1))

    dom = _browser(probe_copy, "--dump-dom", "--virtual-time-budget=10000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    probe = json.loads(re.search(r'data-probe="([^"]+)"', dom.stdout).group(1).replace("&quot;", '"'))
    assert probe == {"images": page.count("<img "), "decoded": page.count("<img "), "errors": []} and probe["images"] == 7

    screenshot = tmp_path / "report.png"
    shot = _browser(out, f"--screenshot={screenshot}", "--window-size=1100,2400")
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(screenshot))[..., :3]  # (H, W, 3) in [0, 1]
    not_white = (pixels < 0.9).any(axis=-1).mean()
    colourful = (np.ptp(pixels, axis=-1) > 0.2).mean()  # plots and maps, not only black text
    assert not_white > 0.05 and colourful > 0.01, (not_white, colourful)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (Debian package 'chromium'; .ci/run installs it)")
def test_the_browser_probe_notices_a_broken_image_and_a_script_error(image_runs):
    _, today, tmp_path = image_runs
    page = render_report(load_run(today)).replace("base64,iVBOR", "base64,AAAAA", 1) + "<script>undefinedFunction()</script>"
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    dom = _browser(broken, "--dump-dom", "--virtual-time-budget=10000")
    probe = json.loads(re.search(r'data-probe="([^"]+)"', dom.stdout).group(1).replace("&quot;", '"'))
    assert probe["decoded"] == probe["images"] - 1 and any("undefinedFunction" in e for e in probe["errors"])


def test_a_run_without_rows_gets_a_report_that_says_so(linear_model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [f"f{j}" for j in range(6)]
    pq.write_table(pa.table({c: pa.array([], pa.float32()) for c in columns}), str(tmp_path / "empty.parquet"))
    run_attribution(RunConfig.from_mapping({"model": linear_model[0], "input": str(tmp_path / "empty.parquet"),
                                            "output": str(tmp_path / "out"), "inputs": {"features": columns}}))
    page = render_report(load_run(str(tmp_path / "out")), baseline=load_run(str(tmp_path / "out")))
    assert "there is nothing to summarize" in page and "<img" not in page


HOSTILE = ["$\\bogus{x}$", "<script>alert(1)</script>", "price $5", "a&b\"c", "f4", "f5"]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A run whose column names, keys and slice values are mathtext and HTML."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from helpers import linear_weights, save_linear_model

    tmp_path = tmp_path_factory.mktemp("hostile")
    model = save_linear_model(tmp_path / "linear.keras", *linear_weights())
    rng = np.random.default_rng(4)
    values = rng.normal(size=(60, 6)).astype(np.float32)
    columns = {name: pa.array(values[:, j]) for j, name in enumerate(HOSTILE)}
    columns["id"] = pa.array([f"<script>k{i}</script>$\\x{{" for i in range(60)])
    columns["seg"] = pa.array(["$\\bad$", "<b>bold</b>"] * 30)
    pq.write_table(pa.table(columns), str(tmp_path / "hostile.parquet"))
    run_attribution(RunConfig.from_mapping({"model": model, "input": str(tmp_path / "hostile.parquet"), "output": str(tmp_path / "run"),
                                            "inputs": {"features": HOSTILE}, "key_column": "id", "slice_columns": ["seg"],
                                            "method": "gradient"}))
    return str(tmp_path / "run"), tmp_path


def test_mathtext_and_html_in_names_keys_and_slices_are_shown_as_text(hostile_run, capsys):
    run_dir, tmp_path = hostile_run
    out = tmp_path / "new folder" / "report.html"
    assert main(["report", run_dir, "--baseline", run_dir, "--out", str(out)]) == 0, capsys.readouterr().err
    page = out.read_text()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "$\\bogus{x}$" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count("<img ") >= 4


def test_a_failing_report_leaves_the_previous_report_byte_for_byte(hostile_run, monkeypatch):
    from audit import plots
    from audit.report import write_report

    run_dir, tmp_path = hostile_run
    out = tmp_path / "kept.html"
    write_report(load_run(run_dir), str(out))
    before = out.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(plots, "importance_bars", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(load_run(run_dir), str(out))
    assert out.read_bytes() == before and before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report-")) == []


def test_report_out_that_is_a_folder_is_refused(hostile_run, capsys):
    run_dir, tmp_path = hostile_run
    assert main(["report", run_dir, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--out '%s' is a folder; give the path of a file to write, e.g. " % tmp_path in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def figures(monkeypatch):
    """Every figure the report draws, as (plotting function's name, figure), kept open for inspection."""
    import inspect
    import io

    import matplotlib.pyplot as plt

    from audit import plots

    drawn = []

    def keep(figure):
        drawn.append((inspect.stack()[1].function, figure))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
        return buffer.getvalue()

    monkeypatch.setattr(plots, "_png", keep)
    yield drawn
    plt.close("all")


def _colorbars(figure):
    return [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]


def test_maps_share_one_colour_scale_shown_by_a_colorbar(image_runs, figures):
    render_report(load_run(image_runs[1]))
    maps = [f for name, f in figures if name == "maps_grid"]
    assert len(maps) == 3  # overall, per class, per value of the slice column 'label'
    for figure in maps:
        panels = [ax for ax in figure.axes if ax.images]
        assert len(_colorbars(figure)) == 1
        assert len({ax.images[0].get_clim() for ax in panels}) == 1  # one scale for every panel
        assert _colorbars(figure)[0].get_ylabel() == "mean |attribution|"
    per_class, per_label = maps[1], maps[2]
    assert len([ax for ax in per_class.axes if ax.images]) == 3 and len([ax for ax in per_label.axes if ax.images]) == 3
    exemplars = next(f for name, f in figures if name == "exemplar_grid")
    assert len(_colorbars(exemplars)) == 4  # one per criterion row


def test_exemplar_captions_are_written_out_and_one_per_criterion_and_class(image_runs):
    from audit.report import caption

    run = load_run(image_runs[1])
    page = render_report(run)
    table = run.exemplars.to_pylist()
    pairs = [(r["criterion"], r["target"]) for r in table]
    assert len(pairs) == len(set(pairs)) and {c for c, _ in pairs} == {"highest_score", "lowest_score", "most_faithful", "least_faithful"}
    assert all(sum(c == criterion for c, _ in pairs) == 3 for criterion in {c for c, _ in pairs})  # 3 classes: one each
    row = table[0]
    assert caption(row).splitlines() == [f"key {row['key']}", f"class {row['target']}", f"score {row['score']:.3f}",
                                         f"completeness error {100 * row['completeness_error']:.2g} %"]
    section = page.split("<h2>Examples</h2>")[1].split("<h2>")[0]
    assert "<th>key</th><th>explained class</th><th>score F(x)[class]</th><th>completeness error</th>" in section
    assert section.count("<tr>") == 1 + len(table)
    assert f"<td>class {row['target']}</td>" in section and f"{100 * row['completeness_error']:.2g} %" in section


def test_a_top_k_run_is_summarized_per_rank(image_runs, figures):
    _, _, tmp_path = image_runs
    rng = np.random.default_rng(9)
    data = write_vector_tfrecord(tmp_path / "topk.tfrecord", rng.random((150, 16)).astype(np.float32), ids=[f"t{i}" for i in range(150)],
                                 feature_name="pixels")
    run_attribution(RunConfig.from_mapping({"model": str(tmp_path / "cnn.keras"), "input": data, "output": str(tmp_path / "topk"),
                                            "key_column": "id", "method": "integrated_gradients", "steps": 8, "target": "top_k:2"}))
    run = load_run(str(tmp_path / "topk"))
    assert {(g["value"], g["rows"]) for g in run.summary["groups"] if g["kind"] == "rank"} == {("1", 150), ("2", 150)}
    rows = read_parquet_dir(tmp_path / "topk").to_pylist()
    rank_one = {(r["id"], r["target"]) for r in rows if r["target_score"] == max(s["target_score"] for s in rows if s["id"] == r["id"])}
    assert all((r["key"], r["target"]) in rank_one for r in run.exemplars.to_pylist())  # exemplars: top classes only
    page = render_report(run)
    assert "explains each record's top 2 classes" in page and "(all 2 ranks pooled: see per rank below)" in page
    assert re.findall(r"<td>rank (\d)</td><td class=\"n\">([\d,]+)</td>", page) == [("1", "150"), ("2", "150")]
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert "score distribution per rank" in alts and "per-rank maps pixels" in alts
    per_rank = next(f for name, f in figures if name == "score_distribution")
    assert [t.get_text() for t in per_rank.axes[0].get_legend().get_texts()] == ["rank 1", "rank 2"]


def test_a_scalar_output_model_gets_a_score_distribution_not_class_shares(tmp_path, figures):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from helpers import save_linear_model

    rng = np.random.default_rng(2)
    model = save_linear_model(tmp_path / "sigmoid.keras", rng.normal(size=(6, 1)).astype(np.float32), np.zeros(1, np.float32), activation="sigmoid")
    columns = [f"f{j}" for j in range(6)]
    pq.write_table(pa.table({c: rng.normal(size=200).astype(np.float32) for c in columns}), str(tmp_path / "d.parquet"))
    run_attribution(RunConfig.from_mapping({"model": model, "input": str(tmp_path / "d.parquet"), "output": str(tmp_path / "out"),
                                            "inputs": {"features": columns}, "method": "gradient"}))
    run = load_run(str(tmp_path / "out"))
    assert run.manifest["model"]["outputs"] == 1
    page = render_report(run)
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert "score distribution" in alts and "prediction distribution" not in alts
    assert "One explained class (the model's single output)" in page
    assert [name for name, _ in figures].count("prediction_histogram") == 0
    histogram = next(f for name, f in figures if name == "score_distribution").axes[0]
    assert histogram.get_xlabel() == "score F(x) (model output)" and histogram.patches


def test_drift_section_lists_reasons_uses_percent_states_the_order_and_labels_without_overlap(image_runs, figures):
    base, today, _ = image_runs
    page = render_report(load_run(today), baseline=load_run(base))
    section = page.split("Drift against the baseline run")[1].split("<h2>")[0]
    assert re.search(r'<span class="drift">DRIFT</span>:</p><ul>(<li>[^<]+</li>){2,}</ul>', section)
    assert "sorted by |change| of mean |attribution|, largest first" in section
    relative = re.findall(r"<td class=\"n\">([+-]\d+\.\d%)</td></tr>", section)
    assert len(relative) == 15 and all(-100 <= float(r[:-1]) for r in relative)
    assert not re.search(r"<td class=\"n\">0\.\d+</td></tr>", section)  # no bare fraction in the last column
    scatter = next(f for name, f in figures if name == "drift_scatter")
    renderer = scatter.canvas.get_renderer()
    notes = [t for t in scatter.axes[0].texts]
    assert [t.get_text() for t in notes] == [str(i) for i in range(1, 11)]
    boxes = [t.get_window_extent(renderer) for t in notes]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    legend = scatter.axes[1].texts[0].get_text().splitlines()
    assert len(legend) == 11 and legend[1].split()[0] == "1" and legend[1].split()[1].startswith("pixels[")


def test_report_refuses_a_baseline_of_another_method_unless_allowed(image_runs, tmp_path, capsys):
    base, today, _ = image_runs
    import shutil

    other = tmp_path / "other"
    shutil.copytree(base, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["settings"]["method"] = "gradient"
    (other / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "r.html"
    assert main(["report", today, "--baseline", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "differ in method (gradient vs integrated_gradients)" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    assert main(["report", today, "--baseline", str(other), "--out", str(out), "--allow-different"]) == 0
    assert "this comparison spans different method (gradient vs integrated_gradients)" in out.read_text()


def test_a_token_run_gets_its_tokens_table_with_the_summary_numbers(tmp_path):
    """Text attributed at its embedding: the report lists, per class, the tokens for and against
    it with their positions and mean attribution, as summary.json has them; markup in a token is
    shown as text."""
    import html

    import pyarrow as pa
    import pyarrow.parquet as pq

    from helpers import save_text_model

    texts = ["good good fine", "bad awful <b>bad</b>", "fine good", "awful bad", "good <b>bad</b>"] * 4
    model, _, _, vocabulary = save_text_model(tmp_path / "text.keras", texts, length=4, standardize=None)
    assert "<b>bad</b>" in vocabulary
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), str(tmp_path / "text.parquet"))
    assert main(["run", "--model", model, "--input", str(tmp_path / "text.parquet"), "--output", str(tmp_path / "out"),
                 "--key-column", "id", "--target", "0", "--steps", "8", "--quiet"]) == 0
    page = render_report(load_run(str(tmp_path / "out")))
    view = json.loads((tmp_path / "out" / "summary.json").read_text())["token_importance"]["text"]["classes"]["0"]
    assert "<h2>Tokens and categories</h2>" in page and view["for"]
    for direction in ("for", "against"):
        for entry in view[direction]:
            cells = f"<td>0</td><td>{direction}</td><td>{html.escape(entry['token'])}</td><td class=\"n\">{entry['count']:,}</td>"
            assert cells in page, cells
    assert "<b>bad</b>" not in page and "&lt;b&gt;bad&lt;/b&gt;" in page


def test_one_channel_exemplars_are_drawn_as_the_data_are_not_as_negatives():
    """A photo's bright pixels must stay light: an image whose top half is 1 and bottom half 0,
    with a zero attribution overlaid, is lighter at the top of its panel."""
    import io

    import matplotlib.image

    from audit import plots

    image = np.zeros((16, 16, 1))
    image[:8] = 1.0
    png = plots.exemplar_grid([("highest_score", [("row", image.reshape(-1), np.zeros(256))])], (16, 16, 1))
    rgb = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    brightness = rgb.mean(axis=-1)  # (H, W) in [0, 1]
    grey = (np.ptp(rgb, axis=-1) < 0.1) & (brightness > 0.4) & (brightness < 0.7)  # black under the (near-white) overlay
    rows, cols = np.nonzero(grey.sum(axis=1) > 60)[0], np.nonzero(grey.sum(axis=0) > 30)[0]
    assert len(rows) > 30 and len(cols) > 30, "the panel's dark half was not found"
    height = rows.max() - rows.min() + 1
    above = brightness[rows.min() - height + 3:rows.min() - 2, cols.min() + 2:cols.max() - 1]  # the panel's top half
    assert above.size and above.mean() > 0.95  # 1.0 drawn light: not a negative


def test_a_run_whose_probabilities_are_saturated_gets_a_note_that_points_to_explain_logits(image_runs):
    import copy
    import dataclasses

    from audit.report import render_report

    run = load_run(image_runs[1])
    assert "a saturated softmax/sigmoid" not in render_report(run)  # this CNN's scores are not saturated
    saturated = dataclasses.replace(run, summary=copy.deepcopy(run.summary))
    overall = next(g for g in saturated.summary["groups"] if g["kind"] == "overall")
    overall["prediction"]["quantiles"].update({"q25": 0.99995, "q50": 0.99999, "q75": 1.0})  # 75 % of rows above 0.9999
    page = render_report(saturated)
    assert "At least 75% of the rows score above 0.9999" in page and "--explain-logits explains the score" in page
    logits = dataclasses.replace(saturated, manifest={**saturated.manifest, "settings": {**saturated.manifest["settings"], "explain_logits": True}})
    assert "a saturated softmax/sigmoid" not in render_report(logits)  # logits do not saturate


def test_the_beeswarm_colours_each_row_by_its_own_value(tmp_path, figures):
    """Gradient x input of a linear model: attribution_j = w_j x_j, so along each feature's row of
    points the colour (the value's rank) rises with x where w_j > 0 and falls where w_j < 0: the
    sampled attributions and values belong to the same rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from helpers import save_linear_model

    rng = np.random.default_rng(5)
    weights = np.array([[2.0], [-1.5], [0.7], [-0.4]], np.float32)
    model = save_linear_model(tmp_path / "linear.keras", weights, np.zeros(1, np.float32))
    columns = [f"f{j}" for j in range(4)]
    pq.write_table(pa.table({c: rng.normal(size=300).astype(np.float32) for c in columns}), str(tmp_path / "d.parquet"))
    run_attribution(RunConfig.from_mapping({"model": model, "input": str(tmp_path / "d.parquet"), "output": str(tmp_path / "out"),
                                            "inputs": {"features": columns}, "method": "gradient_x_input"}))
    run = load_run(str(tmp_path / "out"))
    assert run.summary["points"] == {"rows": 300, "features": 4}
    page = render_report(run)
    assert "beeswarm" in re.findall(r'<img alt="([^"]+)"', page)
    swarm = next(f for name, f in figures if name == "beeswarm").axes[0]
    row_label = {round(float(y)): t.get_text() for y, t in zip(swarm.get_yticks(), swarm.get_yticklabels())}
    coloured = [c for c in swarm.collections if c.get_array() is not None]
    assert len(coloured) == 4 and sorted(row_label.values()) == columns
    for points in coloured:
        x, shade = points.get_offsets()[:, 0], np.asarray(points.get_array())
        label = row_label[round(float(np.mean(points.get_offsets()[:, 1])))]
        direction = np.sign(weights[columns.index(label), 0])
        assert len(x) == 300 and direction * np.corrcoef(np.argsort(np.argsort(x)), shade)[0, 1] > 0.999, label
    # the importance bars carry each feature's 95 % bootstrap interval from summary.json as an error bar
    bars = next(f for name, f in figures if name == "importance_bars").axes[0]
    from matplotlib.container import ErrorbarContainer

    errors = next(c for c in bars.containers if isinstance(c, ErrorbarContainer))
    segments = errors.lines[2][0].get_segments()  # one (low, y) -> (high, y) per bar, top bar first
    overall = next(g for g in run.summary["groups"] if g["kind"] == "overall")["features"]
    ranked = sorted(columns, key=lambda c: -overall[c]["mean_abs"])
    for feature, segment in zip(ranked, segments):
        np.testing.assert_allclose(sorted(segment[:, 0]), overall[feature]["mean_abs_interval"], rtol=1e-9)


def test_class_and_slice_tables_show_the_bootstrap_intervals_of_summary_json(linear_model, tabular_data, tmp_path):
    """A run of three explained classes and a slice column: the per-class importance table, the
    slice table and the class-share table print each value with the 95 % interval summary.json holds."""
    model, _, _ = linear_model
    data, _, _, _ = tabular_data
    run_attribution(RunConfig.from_mapping({"model": model, "input": data, "output": str(tmp_path / "out"), "key_column": "id",
                                            "inputs": {"features": [f"f{j}" for j in range(6)]}, "slice_columns": ["label"],
                                            "method": "gradient_x_input"}))
    run = load_run(str(tmp_path / "out"))
    page = render_report(run)
    assert "with its 95 % bootstrap interval (200 replicates)" in page
    classes = [g for g in run.summary["groups"] if g["kind"] == "target"]
    assert len(classes) >= 2
    for g in classes + [g for g in run.summary["groups"] if g["kind"].startswith("slice:")]:
        name, f = max(g["features"].items(), key=lambda item: item[1]["mean_abs"])
        low, high = f["mean_abs_interval"]
        assert low <= f["mean_abs"] <= high
        assert f"{f['mean_abs']:.4g} [{low:.4g}, {high:.4g}]" in page, (g["kind"], g["value"], name)
    for g in classes:
        low, high = g["share_interval"]
        assert f"{g['share']:.4g} [{low:.4g}, {high:.4g}]" in page
