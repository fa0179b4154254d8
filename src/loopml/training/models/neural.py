"""Neural models trained with PyTorch on the CPU: an MLP with id embeddings and a factorization machine.

Training uses torch (Adam, mini-batches, early stopping on the validation set when one is
given); the fitted weights are saved as safetensors and scored with numpy, so serving does
not import torch and one row and a batch run the same code. The loss follows the task:
log loss (or focal loss) for binary, cross-entropy for multiclass, squared error for
regression and a listwise softmax loss (ListNet) or a pairwise logistic loss (RankNet) over
each group for ranking.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from loopml.errors import ModelError
from loopml.training.models.base import (
    BaseModel,
    FitContext,
    ModelConfig,
    load_arrays,
    register_model,
    rowdot,
    save_arrays,
    sigmoid,
    softmax,
)
from loopml.training.models.encoding import InputEncoder
from loopml.training.models.linear import SCORE_BLOCK_ROWS


def _emb_dim(card: int, fixed: int | None) -> int:
    return fixed if fixed is not None else int(min(32, max(2, round(1.6 * card**0.56))))


class _NeuralConfig(ModelConfig):
    learning_rate: float = Field(default=1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(default=1e-5, ge=0, description="L2 penalty (Adam weight decay).")
    epochs: int = Field(default=30, ge=1, description="Most passes over the training rows.")
    batch_size: int = Field(default=256, ge=1, description="Rows per mini-batch (groups per batch for ranking: /16).")
    patience: int = Field(default=4, ge=1, description="Stop after this many epochs without validation gain.")
    max_levels: int = Field(default=20000, ge=1, description="Most frequent ids kept per categorical column.")
    loss: Literal["auto", "focal", "pairwise"] = Field(
        default="auto",
        description="auto follows the task (log loss, cross-entropy, squared error, listwise ListNet for ranking); "
        "focal for binary; pairwise (RankNet) for ranking.",
    )
    focal_gamma: float = Field(default=2.0, ge=0, description="Gamma of the focal loss.")


class _TorchModel(BaseModel):
    """Shared training loop, losses, early stopping and persistence."""

    supports_focal_loss: ClassVar[bool] = True
    encoder_: InputEncoder
    exports_onnx: ClassVar[bool] = True  # written as one ONNX graph by `loopml export` (loopml.export)
    weights_: dict[str, np.ndarray]

    def _out_dim(self) -> int:
        return self.n_classes_ if self.task == "multiclass" else 1

    def _build(self, torch: Any, n_num: int, cards: list[int]) -> Any:
        raise NotImplementedError

    def _forward_np(self, Zn: np.ndarray, Ci: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        import torch

        from loopml.training.metrics import score_for_pruning

        cfg = self.config
        self.encoder_ = InputEncoder.fit(X, cats, cfg.max_levels)  # type: ignore[attr-defined]
        # embedding sizes declared in the spec (features: embedding_ids dim), by feature column
        self._declared_dims = {int(k): int(v) for k, v in (ctx.extra.get("embedding_dims") or {}).items()}
        Zn = self.encoder_.numeric_matrix(X, np.float32)
        Ci = self.encoder_.category_indices(X)
        self.y_mean_, self.y_std_ = 0.0, 1.0
        if self.task == "regression":
            self.y_mean_, self.y_std_ = float(y.mean()), float(y.std() or 1.0)
        if cfg.loss == "pairwise" and self.task != "ranking":  # type: ignore[attr-defined]
            raise ModelError(f"model `{self.name}`: loss `pairwise` applies to ranking, not `{self.task}`")
        focal = self.task == "binary" and (cfg.loss == "focal" or ctx.focal_gamma is not None)  # type: ignore[attr-defined]
        gamma = ctx.focal_gamma if ctx.focal_gamma is not None else cfg.focal_gamma  # type: ignore[attr-defined]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one thread: deterministic and polite on a shared machine
        try:
            torch.manual_seed(self.seed)
            net = self._build(torch, Zn.shape[1], self.encoder_.cardinalities)
            opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)  # type: ignore[attr-defined]
            tn, tc = torch.from_numpy(Zn), torch.from_numpy(Ci)
            ty = torch.from_numpy(((y - self.y_mean_) / self.y_std_).astype(np.float32) if self.task == "regression"
                                  else y.astype(np.float32 if self.task != "multiclass" else np.int64))
            tw = torch.from_numpy((w if w is not None else np.ones(len(y))).astype(np.float32))
            rng = np.random.default_rng(self.seed)
            batches = self._batches(len(y), ctx.group, rng)
            best, best_state, bad = -math.inf, None, 0
            self.best_epoch_ = cfg.epochs  # type: ignore[attr-defined]
            for epoch in range(cfg.epochs):  # type: ignore[attr-defined]
                net.train()
                for idx in batches():
                    opt.zero_grad()
                    out = net(tn[idx], tc[idx])
                    loss = self._loss(torch, out, ty[idx], tw[idx], focal, gamma, ctx.group, idx)
                    loss.backward()
                    opt.step()
                if ctx.eval_X is not None and ctx.eval_y is not None:
                    self._export(net)
                    s = self._score(np.asarray(ctx.eval_X, dtype=np.float64))
                    value = score_for_pruning(self.task, np.asarray(ctx.eval_y), s, ctx.eval_group)
                    if ctx.report is not None:
                        ctx.report(epoch + 1, value)
                    if value > best + 1e-6:
                        best, bad = value, 0
                        self.best_epoch_ = epoch + 1
                        best_state = {k: v.copy() for k, v in self.weights_.items()}
                    else:
                        bad += 1
                        if bad >= cfg.patience:  # type: ignore[attr-defined]
                            break
            self._export(net)
            if best_state is not None:
                self.weights_ = best_state
        finally:
            torch.set_num_threads(threads)

    def _batches(self, n: int, group: np.ndarray | None, rng: np.random.Generator) -> Any:
        bs = self.config.batch_size  # type: ignore[attr-defined]
        if self.task != "ranking":

            def rows() -> Any:
                perm = rng.permutation(n)
                for i in range(0, n, bs):
                    yield perm[i : i + bs]

            return rows
        if group is None:
            raise ModelError(f"model `{self.name}` needs the group (query) of each row for ranking")
        order = np.argsort(group, kind="stable")
        _, starts = np.unique(group[order], return_index=True)
        members = np.split(order, starts[1:])
        per = max(1, bs // 16)

        def groups() -> Any:
            perm = rng.permutation(len(members))
            for i in range(0, len(perm), per):
                yield np.concatenate([members[g] for g in perm[i : i + per]])

        return groups

    def _loss(self, torch: Any, out: Any, y: Any, w: Any, focal: bool, gamma: float, group: Any, idx: Any) -> Any:
        F = torch.nn.functional
        if self.task == "binary":
            z = out[:, 0]
            if focal:
                p = torch.sigmoid(z)
                pt = torch.where(y > 0.5, p, 1 - p).clamp(1e-7, 1 - 1e-7)
                per = -((1 - pt) ** gamma) * torch.log(pt)
            else:
                per = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        elif self.task == "multiclass":
            per = F.cross_entropy(out, y, reduction="none")
        elif self.task == "regression":
            per = (out[:, 0] - y) ** 2
        elif self.config.loss == "pairwise":  # type: ignore[attr-defined]
            # RankNet: log(1 + exp(-(s_hi - s_lo))) over pairs drawn inside each group
            gi = group[idx]
            order = np.argsort(gi, kind="stable")
            _, starts, sizes = np.unique(gi[order], return_index=True, return_counts=True)
            _, inv = np.unique(gi, return_inverse=True)
            rng = np.random.default_rng(int(idx[0]) if len(idx) else 0)
            a = np.repeat(np.arange(len(idx)), 4)
            b = order[starts[inv[a]] + (rng.random(len(a)) * sizes[inv[a]]).astype(np.int64)]
            yn = y.detach().numpy()
            keep = yn[a] != yn[b]
            if not keep.any():
                return out.sum() * 0.0
            a, b = a[keep], b[keep]
            sign = torch.from_numpy(np.where(yn[a] > yn[b], 1.0, -1.0).astype(np.float32))
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            diff = (out[ta, 0] - out[tb, 0]) * sign
            return (F.softplus(-diff) * w[ta]).mean()
        else:
            # ListNet: cross-entropy between softmax(relevance) and softmax(scores) within each group
            g = torch.from_numpy(np.unique(group[idx], return_inverse=True)[1])
            ng = int(g.max()) + 1
            s = out[:, 0]

            def seg_logsumexp(v: Any) -> Any:
                m = torch.full((ng,), -1e30).scatter_reduce(0, g, v, reduce="amax")
                e = torch.zeros(ng).index_add(0, g, torch.exp(v - m[g]))
                return m + torch.log(e)

            target = torch.exp(y - seg_logsumexp(y)[g])
            per = -target * (s - seg_logsumexp(s)[g])
            return (per * w).sum() / ng
        return (per * w).sum() / w.sum().clamp_min(1e-12)

    def fitted_params(self) -> dict[str, Any]:
        """The epochs early stopping chose (for a refit without validation data)."""
        return {"epochs": int(getattr(self, "best_epoch_", self.config.epochs))}  # type: ignore[attr-defined, arg-type]

    def _export(self, net: Any) -> None:
        self.weights_ = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in net.state_dict().items()}

    def _score(self, X: np.ndarray) -> np.ndarray:
        if X.shape[0] > SCORE_BLOCK_ROWS:  # rows are scored independently: blocks bound the hidden layers' size
            return np.concatenate([self._score(X[i : i + SCORE_BLOCK_ROWS])
                                   for i in range(0, X.shape[0], SCORE_BLOCK_ROWS)])
        Zn = self.encoder_.numeric_matrix(X)
        Ci = self.encoder_.category_indices(X)
        out = self._forward_np(Zn, Ci)
        if self.task == "binary":
            return sigmoid(out[:, 0])
        if self.task == "multiclass":
            return softmax(out)
        if self.task == "regression":
            return out[:, 0] * self.y_std_ + self.y_mean_
        return out[:, 0]

    def _state(self, path: Path) -> dict[str, Any]:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in self.weights_.items()}, str(path / "weights.safetensors"))
        save_arrays(path, "encoder.npz", **self.encoder_.to_arrays())
        return {"y_mean": self.y_mean_, "y_std": self.y_std_}

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        from safetensors.numpy import load_file

        try:
            self.weights_ = {k: v.astype(np.float64) for k, v in load_file(str(path / "weights.safetensors")).items()}
        except FileNotFoundError:
            raise ModelError(f"{path / 'weights.safetensors'}: missing weights file") from None
        self.encoder_ = InputEncoder.from_arrays(load_arrays(path, "encoder.npz"))
        self.y_mean_, self.y_std_ = float(state["y_mean"]), float(state["y_std"])


@register_model
class MLPModel(_TorchModel):
    """Multi-layer perceptron with a learned embedding per categorical (id) feature.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(300, 2)); y = (X[:, 0] > 0).astype(int)
    >>> m = MLPModel(MLPModel.Config(epochs=5)).fit(X, y)
    >>> float(((m.predict_proba(X) > 0.5) == y).mean()) > 0.9
    True
    """

    name: ClassVar[str] = "mlp"
    complexity: ClassVar[int] = 5
    description: ClassVar[str] = "PyTorch MLP (CPU) with embeddings for id features."
    contract_params: ClassVar[dict[str, Any]] = {"epochs": 3, "hidden": [16]}

    class Config(_NeuralConfig):
        """Hyperparameters of the MLP."""

        hidden: list[int] = Field(default_factory=lambda: [128, 64], description="Units of each hidden layer.")
        dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout after each hidden layer.")
        embedding_dim: int | None = Field(
            default=None, ge=1, description="Embedding size per id feature; 1.6·levels^0.56 (at most 32) when unset."
        )

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space."""
        width = trial.suggest_int("width", 32, 256, log=True)
        depth = trial.suggest_int("depth", 1, 3)
        return {
            "hidden": [max(8, width // (2**i)) for i in range(depth)],
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
        }

    def _build(self, torch: Any, n_num: int, cards: list[int]) -> Any:
        nn = torch.nn
        cfg = self.config
        declared = getattr(self, "_declared_dims", {})
        dims = [
            declared.get(int(col), _emb_dim(c, cfg.embedding_dim))  # type: ignore[attr-defined]
            for col, c in zip(self.encoder_.categorical, cards)
        ]
        out_dim = self._out_dim()
        hidden = list(cfg.hidden)  # type: ignore[attr-defined]
        dropout = cfg.dropout  # type: ignore[attr-defined]

        class Net(nn.Module):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                super().__init__()
                self.emb = nn.ModuleList([nn.Embedding(c, d) for c, d in zip(cards, dims)])
                layers: list[Any] = []
                width = n_num + sum(dims)
                for h in hidden:
                    layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
                    width = h
                layers.append(nn.Linear(width, out_dim))
                self.mlp = nn.Sequential(*layers)

            def forward(self, xn: Any, xc: Any) -> Any:
                parts = [xn] + [e(xc[:, i]) for i, e in enumerate(self.emb)]
                return self.mlp(torch.cat(parts, dim=1))

        return Net()

    def _forward_np(self, Zn: np.ndarray, Ci: np.ndarray) -> np.ndarray:
        W = self.weights_
        parts = [Zn] + [W[f"emb.{i}.weight"][Ci[:, i]] for i in range(Ci.shape[1])]
        h = np.hstack(parts) if len(parts) > 1 else parts[0]
        layers = sorted({int(k.split(".")[1]) for k in W if k.startswith("mlp.")})
        for n, li in enumerate(layers):
            h = rowdot(h, W[f"mlp.{li}.weight"]) + W[f"mlp.{li}.bias"]
            if n < len(layers) - 1:
                h = np.maximum(h, 0.0)
        return h


@register_model
class FactorizationMachineModel(_TorchModel):
    """Second-order factorization machine over standardised numerics and one-hot ids.

    Score: ``w0 + Σ w_i x_i + ½ Σ_f ((Σ_i v_if x_i)² − Σ_i v_if² x_i²)``, where each id level
    has its own weight and factor vector (unknown ids share index 0).
    """

    name: ClassVar[str] = "factorization_machine"
    complexity: ClassVar[int] = 3
    description: ClassVar[str] = "Factorization machine (pairwise interactions through latent factors)."
    contract_params: ClassVar[dict[str, Any]] = {"epochs": 3}

    class Config(_NeuralConfig):
        """Hyperparameters of the factorization machine."""

        n_factors: int = Field(default=8, ge=1, description="Size of the latent factor vectors.")
        learning_rate: float = Field(default=5e-3, gt=0, description="Adam learning rate.")
        batch_size: int = Field(default=512, ge=1, description="Rows per mini-batch (groups per batch for ranking: /16).")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space."""
        return {
            "n_factors": trial.suggest_int("n_factors", 2, 32, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True),
        }

    def _build(self, torch: Any, n_num: int, cards: list[int]) -> Any:
        nn = torch.nn
        k = self.config.n_factors  # type: ignore[attr-defined]
        out_dim = self._out_dim()

        class FM(nn.Module):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                super().__init__()
                self.bias = nn.Parameter(torch.zeros(out_dim))
                self.w_num = nn.Parameter(torch.zeros(n_num, out_dim))
                self.v_num = nn.Parameter(torch.randn(n_num, k) * 0.01)
                self.w_cat = nn.ModuleList([nn.Embedding(c, out_dim) for c in cards])
                self.v_cat = nn.ModuleList([nn.Embedding(c, k) for c in cards])
                self.head = nn.Parameter(torch.ones(out_dim))
                for e in self.w_cat:
                    nn.init.zeros_(e.weight)
                for e in self.v_cat:
                    nn.init.normal_(e.weight, std=0.01)

            def forward(self, xn: Any, xc: Any) -> Any:
                lin = self.bias + xn @ self.w_num
                vecs = [xn.unsqueeze(2) * self.v_num.unsqueeze(0)]
                for i in range(xc.shape[1]):
                    lin = lin + self.w_cat[i](xc[:, i])
                    vecs.append(self.v_cat[i](xc[:, i]).unsqueeze(1))
                E = torch.cat(vecs, dim=1)
                inter = 0.5 * (E.sum(1) ** 2 - (E**2).sum(1)).sum(1, keepdim=True)
                return lin + inter * self.head

        return FM()

    def _forward_np(self, Zn: np.ndarray, Ci: np.ndarray) -> np.ndarray:
        W = self.weights_
        lin = W["bias"] + rowdot(Zn, W["w_num"].T)
        vecs = [Zn[:, :, None] * W["v_num"][None, :, :]]
        for i in range(Ci.shape[1]):
            lin = lin + W[f"w_cat.{i}.weight"][Ci[:, i]]
            vecs.append(W[f"v_cat.{i}.weight"][Ci[:, i]][:, None, :])
        E = np.concatenate(vecs, axis=1)
        inter = 0.5 * (E.sum(1) ** 2 - (E**2).sum(1)).sum(1, keepdims=True)
        return lin + inter * W["head"]  # type: ignore[no-any-return]
