"""unmix.weights.registry: the registry table, and download -> verify -> convert -> cache.

Every download goes to a loopback HTTP server on 127.0.0.1 serving tiny Sony-style NNabla
.h5 files made here; the registry is patched to hold entries that point to it. Nothing
touches the internet.
"""
import hashlib
import http.server
import io
import json
import socket
import threading
import zipfile
from dataclasses import replace

import h5py
import numpy as np
import pytest
from conftest import make_model_folder

from unmix.weights import registry as pretrained
from unmix.errors import UnmixError
from unmix.models.model_folder import ModelConfig, init_params, load_params, read_separator_json, save_params, write_separator_json
from unmix.weights.registry import MODELS, PretrainedModel, WeightFile, cache_root, list_models, resolve_model

TINY = ModelConfig(nb_bins=33, nb_channels=2, hidden_size=8, nb_layers=2, max_bin=20)
TARGETS = ("vocals", "drums")
PUBLISHER = "https://example.invalid/records/1/files"  # never fetched: tests always pass base_url


# -- a loopback file server ---------------------------------------------------------------------
class FileServer:
    """Serves `files` (name -> bytes) at http://127.0.0.1:<port>/<name> and records each GET."""

    def __init__(self):
        self.files, self.requests, self.short_by = {}, [], {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append(name)
                if name not in server.files:
                    self.send_error(404, "Not Found")
                    return
                body = server.files[name]
                self.send_response(200)
                # a server that promises more than it sends: the transfer breaks off
                self.send_header("Content-Length", str(len(body) + server.short_by.get(name, 0)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry table, so tests may add entries."""
    table = dict(MODELS)
    monkeypatch.setattr(pretrained, "MODELS", table)
    return table


@pytest.fixture(autouse=True)
def no_env(monkeypatch, tmp_path):
    """No test sees a cache setting (conftest's unreachable $UNMIX_MODEL_URL stays: tests stay offline)."""
    for var in ("UNMIX_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# -- tiny weights -------------------------------------------------------------------------------
def tiny_params(seed):
    return init_params(TINY, seed=seed)


def h5_bytes(named):
    """An NNabla-style .h5 (one dataset per parameter name) holding `named`, as bytes."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for name, value in named.items():
            f.create_dataset(name, data=value)
    return buf.getvalue()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def tiny_entry(name, files, fmt="nnabla-h5", targets=TARGETS):
    return PretrainedModel(
        name=name, description="tiny test model", license="MIT", format=fmt, targets=targets, files=files,
        sample_rate=8000.0, n_fft=64, n_hop=16, nb_channels=2, hidden_size=8, max_bin=20, nb_layers=2,
    )


def publish_h5(server, registry, name="tiny", hashes=None):
    """Serve one Sony-style ``<target>-<tag>.h5`` per target and register them as `name`.

    Returns the parameters of each target. `hashes` maps target -> sha256 to record
    (default: the true full digest).
    """
    params, files = {}, {}
    for seed, target in enumerate(TARGETS):
        params[target] = tiny_params(seed)
        data = h5_bytes(params[target])
        filename = f"{target}-{sha256(data)[:8]}.h5"
        server.files[filename] = data
        want = (hashes or {}).get(target, sha256(data))
        files[target] = WeightFile(f"{PUBLISHER}/{filename}", want)
    registry[name] = tiny_entry(name, files)
    return params


# -- the table ----------------------------------------------------------------------------------
def max_bin(rate, n_fft, bandwidth):
    """open-unmix's bandwidth_to_max_bin."""
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1, endpoint=True)
    return int(np.max(np.where(freqs <= bandwidth)[0])) + 1


def test_registry_entries_are_consistent():
    assert pretrained.DEFAULT_MODEL == "umxhq" and {"umxhq", "umx", "umxl", "umxse"} <= set(MODELS)
    for name, entry in MODELS.items():
        assert entry.name == name and entry.format in ("pth", "nnabla-h5", "nnabla-zip")
        keys = {"archive"} if entry.format == "nnabla-zip" else {"x-umx"} if entry.architecture == "xumx" \
            else set(entry.targets)
        assert set(entry.files) == keys, name
        assert entry.max_bin == max_bin(entry.sample_rate, entry.n_fft, 16000), name
        for f in entry.files.values():
            assert f.url.startswith("https://")
            assert f.sha256 is None or (len(f.sha256) in (8, 64) and int(f.sha256, 16) >= 0)
            assert f.sha512 is None or (len(f.sha512) == 128 and int(f.sha512, 16) >= 0)
            tag = f.filename.rsplit(".", 1)[0].rsplit("-", 1)
            if entry.format == "pth" and len(tag) == 2:  # torch.hub name: the tag is the sha256 prefix
                assert f.sha256 is not None and f.sha256.startswith(tag[1]), f.filename
    assert all(len(f.sha256) == 64 for f in MODELS["umxhq"].files.values())  # default model: full digests
    assert MODELS["umxhq"].files["vocals"].url == "https://zenodo.org/records/3370489/files/vocals-b62c91ce.pth"
    assert (MODELS["umxl"].hidden_size, MODELS["umxse"].nb_channels, MODELS["umxse"].sample_rate) == (1024, 1, 16000)


def test_list_models_shows_every_name_the_bundled_model_and_the_real_default(tmp_path):
    lines = list_models(cache_dir=tmp_path).splitlines()
    rows = {line.split()[0]: line for line in lines[:len(MODELS) + 1]}
    assert list(rows) == [*MODELS, "bundled"]
    assert "CC BY-NC-SA 4.0" in rows["umxl"] and "NON-COMMERCIAL" in rows["umxl"]
    assert "(default)" in rows["umxhq"] and "(cached)" not in rows["umxhq"]
    assert [name for name, row in rows.items() if "(default)" in row] == ["umxhq"]
    assert "ships with unmix" in rows["bundled"] and "synthetic" in rows["bundled"]
    footer = " ".join(lines[len(MODELS) + 1:])
    assert f"Without --model: umxhq, downloaded once into {tmp_path / 'umxhq'}" in footer
    assert "cannot be downloaded (offline), the bundled model" in footer
    (tmp_path / "umxhq").mkdir()
    (tmp_path / "umxhq" / "separator.json").write_text("{}")
    assert "(default) (cached)" in list_models(cache_dir=tmp_path).splitlines()[0]


def test_cache_root_precedence(monkeypatch, tmp_path):
    assert cache_root() == tmp_path / "home" / ".cache" / "unmix"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "unmix"
    monkeypatch.setenv("UNMIX_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_file_url_replaces_everything_before_the_file_name():
    f = MODELS["umxhq"].files["drums"]
    assert pretrained.file_url(f) == f.url
    assert pretrained.file_url(f, "http://mirror/x") == "http://mirror/x/drums-9619578f.pth"


# -- resolving names and folders ------------------------------------------------------------------
def test_download_verify_convert_then_cache_hit(server, registry, tmp_path):
    params = publish_h5(server, registry)
    folder = resolve_model("tiny", cache_dir=tmp_path / "cache", base_url=server.url + "/", progress=True)

    assert folder == tmp_path / "cache" / "tiny"
    assert sorted(server.requests) == sorted(server.files)  # each file fetched once
    meta = read_separator_json(folder)
    assert meta["targets"] == list(TARGETS)
    # signal parameters come from the registry (a bare .h5 does not know them)
    assert (meta["sample_rate"], meta["n_fft"], meta["n_hop"]) == (8000.0, 64, 16)
    assert meta["pretrained"]["name"] == "tiny" and meta["pretrained"]["license"] == "MIT"
    for target in TARGETS:
        loaded = load_params(folder, target)[1]
        for key, value in params[target].items():
            np.testing.assert_array_equal(loaded[key], value)
    assert not (tmp_path / "cache" / "downloads" / "tiny").exists()  # downloads dropped once converted
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tiny"]  # no temporary leftovers

    again = resolve_model("tiny", cache_dir=tmp_path / "cache", base_url=server.url, progress=False)
    assert again == folder and len(server.requests) == len(TARGETS)  # cache hit: no request


def test_unmix_cache_and_model_url_environment(server, registry, tmp_path, monkeypatch):
    publish_h5(server, registry)
    monkeypatch.setenv("UNMIX_CACHE", str(tmp_path / "envcache"))
    monkeypatch.setenv("UNMIX_MODEL_URL", server.url)
    folder = resolve_model("tiny", progress=False)
    assert folder == tmp_path / "envcache" / "tiny" and (folder / "vocals.h5").is_file()
    assert len(server.requests) == 2


def test_sha256_prefix_is_checked_as_prefix(server, registry, tmp_path):
    publish_h5(server, registry)
    registry["tiny"] = replace(registry["tiny"], files={
        t: replace(f, sha256=f.sha256[:8]) for t, f in registry["tiny"].files.items()})
    assert (resolve_model("tiny", cache_dir=tmp_path, base_url=server.url, progress=False) / "drums.h5").is_file()

    publish_h5(server, registry, name="bad", hashes={"drums": "0badc0de"})
    with pytest.raises(UnmixError, match=r"sha256 of .*drums-.*expected prefix 0badc0de.*deleted"):
        resolve_model("bad", cache_dir=tmp_path, base_url=server.url, progress=False)


def test_hash_mismatch_deletes_the_download_and_raises(server, registry, tmp_path):
    publish_h5(server, registry, hashes={"drums": "ab" * 32})
    with pytest.raises(UnmixError) as info:
        resolve_model("tiny", cache_dir=tmp_path, base_url=server.url, progress=False)
    message = str(info.value)
    assert "sha256" in message and "drums-" in message and "deleted" in message and "\n" not in message
    downloads = tmp_path / "downloads" / "tiny"
    # the verified vocals file stays for the next try; nothing of the bad one, no .part file
    assert sorted(p.name for p in downloads.iterdir()) == ["vocals.h5"]
    assert not (tmp_path / "tiny").exists()


def test_sha512_mismatch_is_caught_too(server, registry, tmp_path):
    publish_h5(server, registry)
    registry["tiny"] = replace(registry["tiny"], files={
        t: replace(f, sha512="0" * 128) for t, f in registry["tiny"].files.items()})
    with pytest.raises(UnmixError, match="sha512 of .* expected 0000"):
        resolve_model("tiny", cache_dir=tmp_path, base_url=server.url, progress=False)


def test_verified_downloads_survive_a_failed_conversion(server, registry, tmp_path, monkeypatch):
    publish_h5(server, registry)
    from unmix.weights import convert

    real = convert.convert

    def broken(*args, **kwargs):
        raise UnmixError("disk full")

    monkeypatch.setattr(convert, "convert", broken)
    with pytest.raises(UnmixError, match="disk full"):
        resolve_model("tiny", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert not (tmp_path / "tiny").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["downloads"]  # no half-converted folder

    monkeypatch.setattr(convert, "convert", real)
    folder = resolve_model("tiny", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert (folder / "separator.json").is_file()
    assert len(server.requests) == 2  # the kept downloads were re-verified, not fetched again


def test_corrupted_kept_download_is_deleted(server, registry, tmp_path):
    publish_h5(server, registry)
    kept = tmp_path / "downloads" / "tiny" / "vocals.h5"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"not the weights")
    with pytest.raises(UnmixError, match="sha256 .* deleted"):
        resolve_model("tiny", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert not kept.exists() and server.requests == []


def test_server_down_gives_one_line_offline_error(registry, tmp_path):
    registry["tiny"] = tiny_entry("tiny", {t: WeightFile(f"{PUBLISHER}/{t}.h5", "00" * 32) for t in TARGETS})
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UnmixError) as info:
        resolve_model("tiny", cache_dir=tmp_path, base_url=f"http://127.0.0.1:{port}", progress=False)
    message = str(info.value)
    assert f"download of http://127.0.0.1:{port}/vocals.h5 failed" in message
    assert "seems offline" in message and "--model DIR" in message and "unmix convert" in message
    assert "\n" not in message
    assert list((tmp_path / "downloads" / "tiny").iterdir()) == []  # no .part file left


def test_http_error_and_broken_transfer(server, registry, tmp_path):
    publish_h5(server, registry)
    del server.files[next(n for n in server.files if n.startswith("drums-"))]
    with pytest.raises(UnmixError, match=r"drums-\w+\.h5 failed \(HTTP 404 Not Found\).*--model DIR"):
        resolve_model("tiny", cache_dir=tmp_path, base_url=server.url, progress=False)

    publish_h5(server, registry, name="short")
    server.short_by = {n: 100 for n in server.files}
    with pytest.raises(UnmixError, match="download of .* (was interrupted|stopped after)"):
        resolve_model("short", cache_dir=tmp_path / "c2", base_url=server.url, progress=False)
    assert list((tmp_path / "c2" / "downloads" / "short").iterdir()) == []


def test_nnabla_zip_archive_is_unpacked_and_converted(server, registry, tmp_path):
    params = {t: tiny_params(seed) for seed, t in enumerate(TARGETS)}
    # one file with every target under its own scope, as Sony stores several targets
    named = {f"{t}/{k}": v for t, p in params.items() for k, v in p.items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("umx/", "")
        zf.writestr("umx/tiny.h5", h5_bytes(named))
        zf.writestr("umx/README.txt", "weights")
    server.files["tiny.zip"] = buf.getvalue()
    registry["tiny-zip"] = tiny_entry("tiny-zip", {"archive": WeightFile(f"{PUBLISHER}/tiny.zip")}, fmt="nnabla-zip")

    folder = resolve_model("tiny-zip", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert server.requests == ["tiny.zip"]
    assert read_separator_json(folder)["targets"] == list(TARGETS)
    np.testing.assert_array_equal(load_params(folder, "drums")[1]["fc1/affine/W"],
                                  params["drums"]["fc1/affine/W"])


def test_registry_architecture_mismatch_is_reported(server, registry, tmp_path):
    publish_h5(server, registry)
    registry["tiny"] = replace(registry["tiny"], hidden_size=16)
    with pytest.raises(UnmixError, match=r"'vocals' weights of tiny .* registry expects"):
        resolve_model("tiny", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert not (tmp_path / "tiny").exists()


def test_local_model_folder_passes_through(tmp_path, server):
    folder = tmp_path / "my model"
    folder.mkdir()
    save_params(folder, "vocals", TINY, init_params(TINY))
    write_separator_json(folder, {"vocals": TINY}, 8000, 64, 16)
    assert resolve_model(str(folder)) == folder
    assert resolve_model(folder) == folder
    assert server.requests == []


def test_folder_without_separator_json_is_refused(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(UnmixError, match="not a model folder .*unmix convert"):
        resolve_model(tmp_path / "weights")


def test_unknown_name_lists_known_models(tmp_path):
    with pytest.raises(UnmixError) as info:
        resolve_model("umxxl", cache_dir=tmp_path)
    message = str(info.value)
    assert "umxxl" in message and all(name in message for name in MODELS)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnmixError, match="umxhq, umx, umxl"):
        pretrained.get_model_info("nope")


def test_cache_hit_needs_no_network_and_no_registry_url(registry, tmp_path):
    # a finished cache folder is used even when every URL is unreachable
    folder = tmp_path / "umxhq"
    folder.mkdir()
    (folder / "separator.json").write_text(json.dumps({"targets": [], "sample_rate": 44100, "models": {}}))
    assert resolve_model("umxhq", cache_dir=tmp_path, base_url="http://127.0.0.1:9") == folder


# -- the default model ------------------------------------------------------------------------------
def test_default_model_is_umxhq_downloaded_once_with_progress_bars(server, registry, tmp_path, capsys):
    params = publish_h5(server, registry, name=pretrained.DEFAULT_MODEL)
    folder = resolve_model(None, cache_dir=tmp_path, base_url=server.url)
    assert folder == tmp_path / "umxhq" and read_separator_json(folder)["pretrained"]["name"] == "umxhq"
    np.testing.assert_array_equal(load_params(folder, "drums")[1]["fc1/affine/W"], params["drums"]["fc1/affine/W"])
    err = capsys.readouterr().err
    assert f"downloading umxhq into {folder} (once)" in err
    for name in server.files:  # one tqdm bar per file, run to its end
        assert any(name in line and "100%" in line for line in err.replace("\r", "\n").splitlines()), name
    assert resolve_model(None, cache_dir=tmp_path, base_url=server.url) == folder
    assert len(server.requests) == len(TARGETS) and "downloading" not in capsys.readouterr().err


@pytest.mark.parametrize("failure, reason", [
    ("refused", "Connection refused"),
    ("http", "HTTP 404 Not Found"),
    ("dns", "no lookup of umxhq-mirror.invalid"),  # conftest's offline name lookup, as a DNS failure
])
def test_default_model_falls_back_to_the_bundled_one_when_it_cannot_be_downloaded(
        server, registry, tmp_path, capsys, offline, failure, reason):
    publish_h5(server, registry, name=pretrained.DEFAULT_MODEL)
    if failure == "http":
        server.files.clear()
    base_url = {"refused": offline, "http": server.url, "dns": "http://umxhq-mirror.invalid"}[failure]
    assert resolve_model(None, cache_dir=tmp_path, base_url=base_url, progress=False) == pretrained.BUNDLED_MODEL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("notice: cannot download umxhq, the default model (")
    assert reason in err[0] and "using the bundled model" in err[0]
    assert not (tmp_path / "umxhq").exists()


def test_default_model_with_a_corrupt_download_is_an_error_not_a_fallback(server, registry, tmp_path, capsys):
    publish_h5(server, registry, name=pretrained.DEFAULT_MODEL, hashes={"drums": "ab" * 32})
    with pytest.raises(UnmixError, match="sha256 of .*drums-.*deleted"):
        resolve_model(None, cache_dir=tmp_path, base_url=server.url, progress=False)
    assert "notice" not in capsys.readouterr().err


def test_offline_without_the_bundled_model_is_the_download_error(registry, tmp_path, monkeypatch, offline):
    monkeypatch.setattr(pretrained, "BUNDLED_MODEL", tmp_path / "not-installed")
    with pytest.raises(UnmixError, match="seems offline"):
        resolve_model(None, cache_dir=tmp_path, base_url=offline, progress=False)


def test_bundled_is_a_model_name(tmp_path, monkeypatch):
    assert resolve_model("bundled") == pretrained.BUNDLED_MODEL
    monkeypatch.chdir(tmp_path)
    make_model_folder(tmp_path / "bundled", targets=["vocals"])
    assert resolve_model("bundled").resolve() == tmp_path / "bundled"  # a folder wins over a name, as for the registry


def test_xumx_entry_is_sonys_single_h5_without_a_published_hash():
    entry = MODELS["xumx"]
    assert (entry.architecture, entry.format, entry.targets) == ("xumx", "nnabla-h5", ("bass", "drums", "vocals", "other"))
    assert entry.files["x-umx"].url == "https://nnabla.org/pretrained-models/ai-research-code/x-umx/x-umx.h5"
    assert entry.files["x-umx"].sha256 is None and entry.files["x-umx"].sha512 is None
    assert "no published checksum" in entry.notes


def test_xumx_h5_is_downloaded_converted_and_checked(server, registry, tmp_path):
    params = {t: tiny_params(seed) for seed, t in enumerate(TARGETS)}
    # Sony's x-umx/model.py names: <layer>_<source>[/...], batch norms under their fc scope
    named = {}
    for source, p in params.items():
        for name, value in p.items():
            if "/" not in name:
                named[f"{name}_{source}"] = value
            elif name.startswith("bn"):
                named[f"fc{name[2]}_{source}/bn/{name.rsplit('/', 1)[1]}"] = value.reshape(1, 1, -1)
            else:
                layer, _, rest = name.partition("/")
                named[f"{layer}_{source}/{rest}"] = value
    server.files["x-umx.h5"] = h5_bytes(named)
    entry = replace(tiny_entry("tiny-xumx", {"x-umx": WeightFile(f"{PUBLISHER}/x-umx.h5")}), architecture="xumx")
    registry["tiny-xumx"] = entry
    folder = resolve_model("tiny-xumx", cache_dir=tmp_path, base_url=server.url, progress=False)
    meta = read_separator_json(folder)
    assert meta["architecture"] == "xumx" and sorted(meta["targets"]) == sorted(TARGETS)
    np.testing.assert_array_equal(load_params(folder, "drums")[1]["bn3/bn/var"], params["drums"]["bn3/bn/var"])
    registry["tiny-umx"] = replace(entry, name="tiny-umx", architecture="umx")
    with pytest.raises(UnmixError, match="are an xumx model, the registry expects umx"):
        resolve_model("tiny-umx", cache_dir=tmp_path, base_url=server.url, progress=False)
