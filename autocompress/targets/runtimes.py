"""The runtime pieces below the targets that tools and benchmarks reach, as public names: the
CPU's record (model, VNNI), an ONNX Runtime session as a module and the float ONNX export, the
reader of ``torch``-target artifacts, and the OpenVINO and ExecuTorch runtime modules. The
target modules import the private modules directly; this module only names them.

>>> from autocompress.targets.runtimes import cpu_record  # doctest: +SKIP
>>> cpu_record()["vnni"]  # doctest: +SKIP
True
"""

from __future__ import annotations

from autocompress.targets import _et_lower as executorch_lowering
from autocompress.targets import _et_runtime as executorch_runtime
from autocompress.targets import _ov_runtime as openvino_runtime
from autocompress.targets._cpu import VNNI_FLAGS, cpu_info, cpu_record
from autocompress.targets._ort_graph import OrtModule, export_float, load_config
from autocompress.targets._torch import read as read_torch_artifact

__all__ = [
    "OrtModule",  # an ONNX file run by ONNX Runtime's CPU provider, called like a module
    "VNNI_FLAGS",  # the CPU flags that give int8 dot products (VNNI, AMX)
    "cpu_info",  # (model name, flags) of the CPU
    "cpu_record",  # the CPU as benchmarks and artifact headers record it
    "executorch_lowering",  # quantize and lower a model to an ExecuTorch program (XNNPACK)
    "executorch_runtime",  # load and run .pte programs, read their ops and header
    "export_float",  # a model as a float ONNX graph (dynamic batch)
    "load_config",  # the session config entries an ONNX artifact runs with
    "openvino_runtime",  # compile and run OpenVINO IR, read its runtime ops and header
    "read_torch_artifact",  # (meta, tensors) of a torch-target model.pt
]
