"""Importing unmix changes no process-wide state: malloc tuning, matplotlib's backend, logging."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r'''
import importlib, importlib.util, json, logging, pkgutil, sys
from pathlib import Path

import numpy as np
import pandas as pd

mallopt = []  # ctypes raises the "ctypes.dlsym" audit event when a C function is looked up
sys.addaudithook(lambda event, args: mallopt.append(1) if event == "ctypes.dlsym" and args[1] == "mallopt" else None)

import matplotlib
matplotlib.use("svg")  # the caller's choice of backend
try:
    import nnabla  # noqa: F401  (NNabla configures logging when imported: its doing, not unmix's)
except ImportError:
    pass
logging.getLogger("nnabla").setLevel(logging.DEBUG)  # the caller's choice of log level


def logging_state():
    loggers = {"": logging.getLogger()}
    loggers.update((n, lg) for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger))
    return {n: (lg.level, len(lg.handlers), lg.disabled) for n, lg in loggers.items()}


before = logging_state()
import unmix
modules = sorted(m.name for m in pkgutil.walk_packages(unmix.__path__, "unmix.") if m.name != "unmix.__main__")
has_nnabla = importlib.util.find_spec("nnabla") is not None
for name in modules:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:  # the training modules, where NNabla is not installed
        if has_nnabla or exc.name != "nnabla":
            raise
after = logging_state()
report = {"modules": modules, "backend_after_import": matplotlib.get_backend(),
          "changed_loggers": sorted(n for n in before if after.get(n) != before[n]),
          "mallopt_after_import": len(mallopt)}

from unmix.separation import demo
from unmix.evaluation import scores
out = Path(sys.argv[2])
audio = np.random.default_rng(0).normal(size=(2, 8000)).astype(np.float32) * 0.1
demo.plot_spectrograms(audio, {"vocals": audio / 2}, 8000, out / "spec.png")
index = pd.MultiIndex.from_product([["a", "b"], ["vocals", "drums"]], names=["track", "target"])
scores.plot_sdr(pd.DataFrame({"SDR": [1.0, 2.0, 3.0, 4.0]}, index=index), out / "sdr.png")
report["backend_after_plots"] = matplotlib.get_backend()
pyplot = sys.modules.get("matplotlib.pyplot")
report["pyplot_figures"] = len(pyplot.get_fignums()) if pyplot else 0

sep = unmix.load_separator(sys.argv[1], niter=0)
report["mallopt_after_load"] = len(mallopt)
sep.separate(audio, 44100)
report["mallopt_after_separation"] = len(mallopt)
print(json.dumps(report))
'''


def test_imports_leave_process_state_alone_and_separation_tunes_malloc_once(tiny_model, tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model), str(tmp_path)], capture_output=True,
                          text=True, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"unmix.cli", "unmix.separation.separator", "unmix.separation.demo", "unmix.evaluation.evaluate",
            "unmix.evaluation.scores", "unmix.evaluation.oracles",
            "unmix.separation.stems", "unmix.training.train"} <= set(report["modules"])
    assert report["backend_after_import"] == "svg" and report["backend_after_plots"] == "svg"
    assert report["pyplot_figures"] == 0
    assert report["changed_loggers"] == []
    assert report["mallopt_after_import"] == 0
    assert report["mallopt_after_load"] == 1  # libc's mallopt looked up by the first separator
    assert report["mallopt_after_separation"] == 1  # and not again: once per process
    assert (tmp_path / "spec.png").stat().st_size > 0 and (tmp_path / "sdr.png").stat().st_size > 0
