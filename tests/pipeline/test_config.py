import pytest

from pipeline.config import RunConfig, load_yaml_config, parse_baseline, parse_target

BASE = {"model": "m.keras", "input": "data/*.parquet", "output": "out"}


def test_defaults_and_method_settings():
    config = RunConfig.from_mapping(BASE)
    assert config.method == "integrated_gradients"
    assert config.setting("steps") == 64 and config.setting("rule") == "gausslegendre"
    assert config.input == ("data/*.parquet",)
    assert config.to_dict()["steps"] == 64
    assert "samples" not in config.to_dict()


def test_unknown_keys_are_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['step'\] in config. Did you mean 'steps'\? Known settings are"):
        RunConfig.from_mapping({**BASE, "step": 3})


def test_missing_required_settings():
    with pytest.raises(ValueError, match=r"missing required setting\(s\) \['output'\]"):
        RunConfig.from_mapping({"model": "m", "input": "x"})


def test_settings_of_another_method_are_rejected():
    with pytest.raises(ValueError, match="setting 'steps' applies only to method\\(s\\) \\['integrated_gradients'\\], but method is 'gradient'"):
        RunConfig.from_mapping({**BASE, "method": "gradient", "steps": 8})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"method": "shap"}, "method 'shap' is not valid; expected one of"),
        ({"batch_size": 0}, "batch_size must be a positive integer; got 0"),
        ({"rule": "simpson"}, "rule 'simpson' is not valid"),
        ({"baseline": "average"}, "baseline 'average' is not valid; expected 'auto', 'median', 'mean', 'median:PATH', 'mean:PATH', 'blur', 'zeros'"),
        ({"baseline_sample_size": 0}, "baseline_sample_size must be a positive integer; got 0"),
        ({"baseline_far_share": 1.5}, r"baseline_far_share must be a number in \[0, 1\]"),
        ({"target": "top_k:0"}, "target 'top_k:0' is not valid"),
        ({"method": "smoothgrad", "noise_fraction": -1}, "noise_fraction must be a number >= 0"),
        ({"method": "expected_gradients"}, "needs background rows: pass --background"),
        ({"explain_logits": "yes"}, "explain_logits must be true, false or absent"),
        ({"parquet_pre_buffer": "auto"}, r"parquet_pre_buffer must be true, false or absent \(automatic\); got 'auto'"),
        ({"inputs": {"x": 3}}, r"inputs\['x'\] must be a column name or a non-empty list"),
        ({"summary_sample_size": 0}, "summary_sample_size must be a positive integer"),
        ({"compute_threads": 0}, "compute_threads must be a positive integer; got 0"),
        ({"compute_threads": "all"}, "compute_threads must be a positive integer; got 'all'"),
        ({"completeness_threshold": 0}, "completeness_threshold must be a number > 0"),
        ({"completeness_target": 0}, "completeness_target must be a finite number > 0"),
        ({"completeness_target": 0.01, "steps": 64, "max_steps": 32}, r"max_steps must be an integer >= steps \(64\)"),
        ({"max_steps": 512}, "max_steps .* caps completeness-driven integrated gradients, which is off; set completeness_target"),
        ({"completeness_target": 0.01, "max_steps": 100_000}, "max_steps 100,000 is too large: at most 65,536"),
        ({"method": "gradient", "completeness_target": 0.01}, "applies only to method"),
        ({"summaries": False, "slice_columns": ["country"]}, "slice_columns are summary groups, but summaries is false"),
        ({"params": {"bad-name": "x"}}, "param name 'bad-name' is not valid"),
        ({"output": "out/{date}"}, r"output 'out/\{date\}' needs a value for \{date\}: pass --date YYYY-MM-DD"),
        ({"input": "in/{region}/*.parquet"}, r"needs a value for \{region\}: pass --param region=VALUE"),
        ({"output": "out/{date:%Y}"}, "is not a plain name"),
        ({"date": "2026-11-28", "params": {"date": "2026-11-27"}}, "date is given twice with different values"),
        # template values go into paths: nothing that climbs out of them, globs or is not a date
        ({"date": "../../victim", "output": "runs/{date}"}, r"date must be a date written YYYY-MM-DD"),
        ({"date": "2026-02-30"}, "is not a calendar date"),
        ({"params": {"date": "yesterday"}}, r"date must be a date written YYYY-MM-DD"),
        ({"params": {"region": "../etc"}, "output": "o/{region}"}, r"param 'region' value '../etc' cannot go into a path"),
        ({"params": {"region": "a/b"}}, r"param 'region' value 'a/b' cannot go into a path"),
        ({"params": {"region": "a\\b"}}, "cannot go into a path"),
        ({"params": {"region": ".."}}, "cannot go into a path"),
        ({"params": {"region": "*"}}, "no glob characters"),
        ({"params": {"region": ""}}, "cannot go into a path"),
    ],
)
def test_invalid_values_say_what_was_expected(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_mapping({**BASE, **values})


def test_target_forms():
    assert parse_target("predicted").mode == "predicted"
    assert parse_target(3).index == 3 and parse_target("3").index == 3 and parse_target("index:3").index == 3
    assert parse_target("label:y").column == "y"
    assert parse_target("top_k:2").k == 2


def test_baseline_forms():
    assert parse_baseline("zeros").kind == "zeros"
    assert parse_baseline("constant:0.5").value == 0.5
    assert parse_baseline(0.25).value == 0.25
    assert parse_baseline("file:b.parquet").path == "b.parquet"


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_yaml_config(str(path))
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_yaml_config(str(path))


def test_every_example_config_is_valid():
    import glob
    import os

    from pipeline.cli import build_parser, check_pipeline_args, options_to_args

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = sorted(glob.glob(os.path.join(repo, "configs", "*.yaml")))
    assert len(paths) >= 6
    runners = set()
    for path in paths:
        values = load_yaml_config(path)
        beam_args = options_to_args(values.pop("pipeline_options", {}))
        check_pipeline_args(beam_args, build_parser())  # every runner option is a real Beam option
        runners |= {a.split("=", 1)[1] for a in beam_args if a.startswith("--runner=")}
        config = RunConfig.from_mapping({**values, "date": "2026-11-27"}, source=path)
        local = config.model.startswith("demo_output/")
        assert local or runners, path  # demo examples run as they are; the others name their runner
    assert runners == {"DataflowRunner", "FlinkRunner"}


def test_yaml_pipeline_options_become_beam_flags_that_command_line_flags_override():
    from pipeline.cli import options_to_args

    args = options_to_args({"runner": "DataflowRunner", "experiments": ["a", "b"], "save_main_session": True, "streaming": False})
    assert args == ["--runner=DataflowRunner", "--experiments=a", "--experiments=b", "--save_main_session"]
    with pytest.raises(ValueError, match="pipeline_options must map Beam option names to values"):
        options_to_args(["--runner=X"])


def test_date_and_params_fill_path_templates_and_survive_a_round_trip():
    config = RunConfig.from_mapping({
        **BASE, "input": ["gs://b/{region}/{date}/*.tfrecord"], "output": "gs://b/out/{region}/dt={date}",
        "model": "gs://b/models/{model_version}/m.keras", "date": "2026-11-28",
        "params": {"region": "eu", "model_version": 7},
    })
    assert config.input == ("gs://b/eu/2026-11-28/*.tfrecord",)
    assert config.output == "gs://b/out/eu/dt=2026-11-28"
    assert config.model == "gs://b/models/7/m.keras"
    assert config.params == {"region": "eu", "model_version": "7", "date": "2026-11-28"}
    assert RunConfig.from_mapping(config.to_dict()).to_dict() == config.to_dict()


def test_unquoted_yaml_dates_are_read_as_text(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\ninput: in/dt={date}/*.parquet\noutput: out/{day}\ndate: 2026-11-27\nparams: {day: 2026-11-26}\n")
    config = RunConfig.from_mapping(load_yaml_config(str(path)))
    assert (config.date, config.input, config.output) == ("2026-11-27", ("in/dt=2026-11-27/*.parquet",), "out/2026-11-26")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"baseline": "constant:nan"}, r"baseline 'constant:nan' is not a finite number"),
        ({"baseline": "constant:inf"}, r"baseline 'constant:inf' is not a finite number"),
        ({"baseline": float("-inf")}, r"baseline -inf is not a finite number"),
        ({"method": "smoothgrad", "noise_fraction": float("nan")}, r"noise_fraction must be a finite number .*; got nan"),
        ({"method": "smoothgrad", "noise_fraction": float("inf")}, r"noise_fraction must be a finite number .*; got inf"),
        ({"completeness_threshold": float("nan")}, r"completeness_threshold must be a finite number .*; got nan"),
        ({"completeness_threshold": float("inf")}, r"completeness_threshold must be a finite number .*; got inf"),
        ({"max_dead_letter_fraction": float("nan")}, r"max_dead_letter_fraction must be a finite number .*; got nan"),
    ],
)
def test_non_finite_numbers_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_mapping({**BASE, **values})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"steps": 100_000}, r"steps 100,000 is too large: at most 4,096 \(the Gauss-Legendre rule costs steps\^3 time"),
        ({"method": "smoothgrad", "samples": 10_001}, r"samples 10,001 is too large: at most 10,000"),
        ({"batch_size": 1_000_001}, r"batch_size 1,000,001 is too large: at most 1,000,000"),
        ({"chunk_size": 2_000_000}, r"chunk_size 2,000,000 is too large: at most 1,000,000"),
        ({"compute_threads": 5000}, r"compute_threads 5,000 is too large: at most 1,024"),
    ],
)
def test_sizes_have_upper_bounds_with_the_reason(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_mapping({**BASE, **values})
    assert RunConfig.from_mapping({**BASE, "steps": 4096, "batch_size": 1_000_000, "chunk_size": 1_000_000}).setting("steps") == 4096


def test_a_config_path_that_is_a_folder_or_not_utf8_says_so(tmp_path):
    with pytest.raises(ValueError, match=r"config file '.*' is a folder; pass the YAML file itself"):
        load_yaml_config(str(tmp_path))
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"config file '.*latin1\.yaml' is not UTF-8 text \(byte b'\\xe9' at offset 10\); save it as UTF-8"):
        load_yaml_config(str(path))


def test_enumerated_values_and_settings_get_a_did_you_mean():
    with pytest.raises(ValueError, match=r"method 'integrated_gradient' is not valid; .* Did you mean 'integrated_gradients'\?"):
        RunConfig.from_mapping({**BASE, "method": "integrated_gradient"})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['key_colum'\] in config. Did you mean 'key_column'\?"):
        RunConfig.from_mapping({**BASE, "key_colum": "id"})


def test_the_former_flag_names_are_accepted_as_setting_names():
    config = RunConfig.from_mapping({**BASE, "input_map": {"x": ["a", "b"]}, "passthrough": ["p"], "slice_column": ["s"]})
    assert (dict(config.inputs), config.passthrough_columns, config.slice_columns) == ({"x": ("a", "b")}, ("p",), ("s",))
    with pytest.raises(ValueError, match="gives both 'passthrough' and 'passthrough_columns', two names of one setting"):
        RunConfig.from_mapping({**BASE, "passthrough": ["p"], "passthrough_columns": ["q"]})


def test_image_columns_are_typed_once_and_round_trip_through_the_manifest_settings():
    from transforms.images import ImageSpec

    config = RunConfig.from_mapping({**BASE, "images": {"image/encoded": {"size": [28, 28], "channels": 1, "preset": "symmetric"}}})
    assert config.images == {"image/encoded": ImageSpec(28, 28, 1, 1 / 127.5, -1.0)}
    settings = config.to_dict()
    assert settings["images"] == {"image/encoded": {"size": [28, 28], "channels": 1, "scale": 1 / 127.5, "offset": -1.0}}
    assert RunConfig.from_mapping(settings).images == config.images  # finalize rebuilds the config from the manifest
    with pytest.raises(ValueError, match=r"images\['image/encoded'\] has unknown key\(s\) \['resize'\]"):
        RunConfig.from_mapping({**BASE, "images": {"image/encoded": {"size": [28, 28], "channels": 1, "resize": "nearest"}}})
    with pytest.raises(ValueError, match=r"images must map image columns to their decoding"):
        RunConfig.from_mapping({**BASE, "images": ["image/encoded"]})


def test_grad_cam_takes_one_layer():
    config = RunConfig.from_mapping({**BASE, "method": "grad_cam", "layers": "conv2"})
    assert config.layers == ("conv2",) and config.to_dict()["layers"] == ["conv2"]
    assert RunConfig.from_mapping({**BASE, "method": "grad_cam"}).layers == ()
    with pytest.raises(ValueError, match=r"grad_cam weighs the activations of one layer; got layers \['a', 'b'\]"):
        RunConfig.from_mapping({**BASE, "method": "grad_cam", "layers": ["a", "b"]})
    with pytest.raises(ValueError, match=r"setting 'steps' applies only to method\(s\) \['integrated_gradients'\], but method is 'grad_cam'"):
        RunConfig.from_mapping({**BASE, "method": "grad_cam", "steps": 8})


def test_layers_and_layer_baseline():
    config = RunConfig.from_mapping({**BASE, "layers": "embedding", "layer_baseline": "id:0"})
    assert config.layers == ("embedding",) and config.setting("layer_baseline") == "id:0"
    assert RunConfig.from_mapping(BASE).setting("layer_baseline") == "zeros"
    with pytest.raises(ValueError, match=r"layer_baseline 'id:-1' is not valid; expected 'zeros' .* or 'id:N'"):
        RunConfig.from_mapping({**BASE, "layer_baseline": "id:-1"})
    with pytest.raises(ValueError, match=r"setting 'layer_baseline' applies only to method\(s\) \['integrated_gradients', 'sampled_shapley', 'occlusion'\]"):
        RunConfig.from_mapping({**BASE, "method": "gradient", "layer_baseline": "id:0"})
    with pytest.raises(ValueError, match=r"layers must be a string or a list of strings; got \[3\]"):
        RunConfig.from_mapping({**BASE, "layers": [3]})
