"""This training process among the data-parallel ones, and its NNabla context.

Multi-GPU (needs ``nnabla-ext-cuda``): ``mpirun -n 4 unmix train --context cudnn ...``; see
`unmix.training.train` for how the processes share the work.
"""
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from unmix.errors import UnmixError


@dataclass(frozen=True)
class Processes:
    """This process among the data-parallel ones (`comm` None: the only one, rank 0 of 1)."""

    comm: object = None
    quiet: bool = False

    @property
    def rank(self):
        return self.comm.rank if self.comm else 0

    @property
    def size(self):
        return self.comm.size if self.comm else 1

    @property
    def writer(self):
        """Only rank 0 writes files."""
        return self.rank == 0

    @property
    def progress(self):
        return self.writer and not self.quiet

    def say(self, message):
        if self.progress:
            tqdm.write(message)


def mixed_seed(*values):
    """A 31-bit seed from several integers (NNabla's nn.seed takes one int)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0] & 0x7FFFFFFF)


def setup_context(context):
    """Make `context` ('cpu', 'cuda', 'cudnn') NNabla's default; under mpirun with several
    processes, also start the data-parallel communicator and put each process on GPU
    ``local_rank`` (the recipe of NNabla's examples). Returns the communicator or None."""
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMI_SIZE") or 1)
    if context == "cpu":
        if size > 1:
            raise UnmixError("data-parallel training under mpirun needs --context cudnn (nnabla-ext-cuda)")
        return None
    try:
        import nnabla as nn

        from unmix.models.nnabla_graph import extension_context

        ctx = extension_context(context)
        comm = None
        if size > 1:
            import nnabla.communicators as C

            comm = C.MultiProcessDataParallelCommunicator(ctx)
            comm.init()
            ctx.device_id = str(comm.local_rank)
        nn.set_default_context(ctx)
    except Exception as exc:
        raise UnmixError(f"cannot use the NNabla context '{context}' (is nnabla-ext-cuda installed?): {exc}") from None
    return comm


def all_sum(comm, values):
    """Sum a few floats over all processes."""
    import nnabla as nn

    array = nn.NdArray.from_numpy_array(np.asarray(values, dtype=np.float64).astype(np.float32))
    comm.all_reduce([array], division=False, inplace=True)
    summed = array.data
    return float(summed[0]), int(round(float(summed[1])))
