"""NncQuantizer: a torchao PT2E `Quantizer` that annotates a program the way nnc's integer
kernels compute it.

    from nnc.frontend.pt2e_quantizer import NncQuantizer, pt2e_api
    api = pt2e_api()
    m = torch.export.export(model, (x,)).module()
    m = api.prepare_pt2e(m, NncQuantizer())          # or api.prepare_qat_pt2e(m, NncQuantizer(qat=True))
    for batch in calibration: m(batch)
    m = api.convert_pt2e(m)

What it asks for (the contract of tools/nnc/arith.py):
  activations  int8 [-128, 127], asymmetric, per tensor (histogram observer, as torch's qnnpack default)
  weights      int8 [-127, 127], symmetric, per output channel (or per tensor)
  bias         int32 at scale s_in * s_w (zero point 0), derived from the input and weight observers
  conv/linear + relu/hardtanh/clamp fused: one quantize step after the activation
  max pool, relu alone, flatten/view/reshape, dropout: output shares the input's parameters,
  so the integer kernels move values without requantizing.
"""
from __future__ import annotations

import contextlib
import logging
import types


@contextlib.contextmanager
def _quiet_torchao_import():
    """torchao logs a failure for each CUDA extension it cannot load on a CPU-only torch, and torch
    warns about an Enum it registers; both are harmless here and would only confuse users."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def pt2e_api() -> types.SimpleNamespace:
    """torchao's PT2E entry points, imported quietly: prepare_pt2e, prepare_qat_pt2e, convert_pt2e."""
    with _quiet_torchao_import():
        from torchao.quantization.pt2e import quantize_pt2e as q
    return types.SimpleNamespace(prepare_pt2e=q.prepare_pt2e, prepare_qat_pt2e=q.prepare_qat_pt2e,
                                 convert_pt2e=q.convert_pt2e)


with _quiet_torchao_import():
    import torch
    from torchao.quantization.pt2e import fake_quantize as _fq
    from torchao.quantization.pt2e import observer as _obs
    from torchao.quantization.pt2e.quantizer import (DerivedQuantizationSpec, QuantizationAnnotation,
                                                     QuantizationSpec, Quantizer,
                                                     SharedQuantizationSpec)

aten = torch.ops.aten

# aten ops by role. Names, not objects, so that .default/.Tensor/in-place overloads all match.
_WEIGHTED = {"conv2d", "linear"}
_ACTIVATIONS = {"relu", "relu_", "hardtanh", "hardtanh_", "clamp", "relu6"}
_SHARED = {"max_pool2d", "flatten", "view", "reshape", "_unsafe_view", "dropout", "squeeze",
           "unsqueeze", "contiguous", "clone", "relu", "relu_"}
_REQUANTIZING = {"add", "add_", "cat", "avg_pool2d", "adaptive_avg_pool2d", "mean",
                 # element-wise functions: the importer turns each into a 256-entry table
                 "sigmoid", "tanh", "hardswish", "hardswish_", "hardsigmoid", "gelu", "leaky_relu",
                 "elu", "silu", "silu_"}


def _op_name(node) -> str:
    if node.op != "call_function":
        return ""
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    return getattr(packet, "__name__", getattr(target, "__name__", str(target)))


class NncQuantizer(Quantizer):
    """PT2E quantizer for nnc. `per_channel`: weights per output channel (default) or per tensor;
    `qat`: fake-quantize modules for prepare_qat_pt2e instead of observers."""

    def __init__(self, per_channel: bool = True, qat: bool = False, uint8_activations: bool = False):
        super().__init__()
        self.per_channel, self.qat = per_channel, qat
        # uint8 activations (as x86/qnnpack-style backends use) map onto the same int8 kernels.
        self.act_dtype, self.act_range = (torch.uint8, (0, 255)) if uint8_activations else (torch.int8, (-128, 127))

    # -- specs -----------------------------------------------------------------------------------
    def act_spec(self) -> QuantizationSpec:
        if self.qat:
            ctr = _fq.FakeQuantize.with_args(observer=_obs.MovingAverageMinMaxObserver,
                                             quant_min=self.act_range[0], quant_max=self.act_range[1],
                                             dtype=self.act_dtype, qscheme=torch.per_tensor_affine)
        else:
            ctr = _obs.HistogramObserver.with_args(eps=2 ** -12)
        return QuantizationSpec(self.act_dtype, ctr, *self.act_range, torch.per_tensor_affine)

    def weight_spec(self) -> QuantizationSpec:
        if self.per_channel:
            scheme, obs = torch.per_channel_symmetric, _obs.PerChannelMinMaxObserver
            if self.qat:
                obs = _obs.MovingAveragePerChannelMinMaxObserver
            axis = 0
        else:
            scheme, obs = torch.per_tensor_symmetric, _obs.MinMaxObserver
            if self.qat:
                obs = _obs.MovingAverageMinMaxObserver
            axis = None
        ctr = obs.with_args(eps=2 ** -12)
        if self.qat:
            ctr = _fq.FakeQuantize.with_args(observer=obs, quant_min=-127, quant_max=127,
                                             dtype=torch.int8, qscheme=scheme,
                                             **({"ch_axis": axis} if axis is not None else {}))
        return QuantizationSpec(torch.int8, ctr, -127, 127, scheme, ch_axis=axis)

    def bias_spec(self, node, act, weight) -> DerivedQuantizationSpec:
        def derive(observers):
            act_obs, w_obs = observers
            s_in, _ = act_obs.calculate_qparams()
            s_w, _ = w_obs.calculate_qparams()
            scale = (s_in.float() * s_w.float()).reshape(-1)
            return scale, torch.zeros_like(scale, dtype=torch.int32)
        per_channel = self.per_channel
        return DerivedQuantizationSpec(
            derived_from=[(act, node), (weight, node)], derive_qparams_fn=derive,
            dtype=torch.int32, quant_min=-2 ** 31, quant_max=2 ** 31 - 1,
            qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
            ch_axis=0 if per_channel else None)

    # -- annotation --------------------------------------------------------------------------------
    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        done = set()
        for node in model.graph.nodes:
            if node in done:
                continue
            name = _op_name(node)
            if name in _WEIGHTED:
                done.update(self._annotate_weighted(node))
            elif name in ("add", "add_"):
                done.update(self._annotate_add(node))
            elif name in _SHARED and self._input_is_tensor(node):
                self._annotate_shared(node)
            elif name in _REQUANTIZING:
                self._annotate_requantizing(node)
        return model

    def validate(self, model: torch.fx.GraphModule) -> None:
        pass

    @staticmethod
    def _input_is_tensor(node) -> bool:
        return bool(node.args) and hasattr(node.args[0], "op")

    @staticmethod
    def _fused_activation(node):
        """The relu/hardtanh/clamp right after `node` if it is its only user, else None."""
        users = list(node.users)
        if len(users) == 1 and _op_name(users[0]) in _ACTIVATIONS:
            return users[0]
        return None

    def _set(self, node, inputs: dict, output):
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map=inputs, output_qspec=output, _annotated=True)

    def _annotate_weighted(self, node):
        act, weight = node.args[0], node.args[1]
        bias = node.args[2] if len(node.args) > 2 else None
        inputs = {act: self.act_spec(), weight: self.weight_spec()}
        if bias is not None and hasattr(bias, "op"):
            inputs[bias] = self.bias_spec(node, act, weight)
        return self._annotate_with_activation(node, inputs)

    def _annotate_add(self, node):
        inputs = {a: self.act_spec() for a in node.args[:2] if hasattr(a, "op")}
        if len(inputs) != 2:
            return [node]      # add of a constant: left in float, the importer names it
        return self._annotate_with_activation(node, inputs)

    def _annotate_with_activation(self, node, inputs):
        """The node's inputs; its output, or that of the activation fused after it."""
        fused = self._fused_activation(node)
        self._set(node, inputs, None if fused else self.act_spec())
        if fused is None:
            return [node]
        self._set(fused, {}, self.act_spec())
        return [node, fused]

    def _annotate_shared(self, node):
        src = node.args[0]
        self._set(node, {src: self.act_spec()}, SharedQuantizationSpec((src, node)))

    def _annotate_requantizing(self, node):
        first = node.args[0]
        srcs = list(first) if isinstance(first, (list, tuple)) else [first]
        inputs = {s: self.act_spec() for s in srcs if hasattr(s, "op")}
        self._set(node, inputs, self.act_spec())


class QuantizedOutputs(Quantizer):
    """Adds a quantize step to every program output another quantizer left in float (torchao's
    x86 quantizer leaves the last conv/linear unquantized: its backend returns floats, the C model
    returns int8 tensors). Compose it after that quantizer:

        prepare_pt2e(m, ComposableQuantizer([X86InductorQuantizer().set_global(cfg), QuantizedOutputs()]))

    The output gets the activations' observer and dtype (`uint8=True` as the x86 quantizer's
    activations, else int8)."""

    def __init__(self, uint8: bool = True):
        super().__init__()
        self.spec = NncQuantizer(uint8_activations=uint8).act_spec()

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        out = next(n for n in model.graph.nodes if n.op == "output")
        results = out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]
        for node in results:
            ann = node.meta.get("quantization_annotation")
            if ann is None:
                continue          # not quantized at all: the importer names it
            if ann.output_qspec is None:
                # in place: ComposableQuantizer refuses a replaced annotation object
                ann.output_qspec = self.spec
        return model

    def validate(self, model: torch.fx.GraphModule) -> None:
        pass


def quantize_pt2e(model, example, calibration, per_channel: bool = True, progress: bool = True):
    """Float nn.Module -> converted PT2E program (torch.export.ExportedProgram), PTQ with
    NncQuantizer on `calibration` (an iterable of input tensors shaped like `example`)."""
    from tqdm import tqdm
    api = pt2e_api()
    model = model.eval()
    calibration = list(calibration)
    with torch.no_grad():
        graph, batch = _export_for_calibration(model, example)
        prepared = api.prepare_pt2e(graph, NncQuantizer(per_channel=per_channel))
        with tqdm(total=len(calibration), desc="calibrating", unit="input", disable=not progress,
                  leave=False) as bar:
            for i in range(0, len(calibration), batch):
                chunk = calibration[i:i + batch]
                prepared(torch.cat([x.reshape(example.shape) for x in chunk]))
                bar.update(len(chunk))
        converted = api.convert_pt2e(prepared)
        return torch.export.export(converted, (example,))


def _export_for_calibration(model, example, batch: int = 32):
    """Export with a dynamic batch dimension so calibration runs in batches; a model whose
    forward() fixes the batch size is exported as it is and calibrated one input at a time."""
    import contextlib
    import io
    # a failed attempt prints its whole graph to stderr: the error raised below says what matters
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            dim = torch.export.Dim("batch", min=1, max=4096)
            return torch.export.export(model, (example,), dynamic_shapes=({0: dim},)).module(), batch
        except Exception:  # noqa: BLE001 -- any export constraint failure: fall back to the static shape
            pass
        try:
            return torch.export.export(model, (example,)).module(), 1
        except Exception as e:  # noqa: BLE001 -- the user's model cannot be captured: say why and where
            from ..errors import NncError, first_line, user_line_of
            raise NncError(f"torch.export cannot capture the model: {first_line(e)}",
                           user_line_of(e) or f"model {type(model).__name__}",
                           "PT2E needs a forward() without data-dependent control flow (no `if` or "
                           "loop on tensor values) and with ops torch.export traces; rewrite "
                           "forward(), or return a torch.ao.quantization (eager) converted model "
                           "from the factory") from None
