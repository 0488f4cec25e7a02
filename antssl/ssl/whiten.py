"""Post-hoc embedding transforms: centring, scene-nuisance projection, PCA whitening (numpy).

Fitted once on stored embeddings (with each row's scene id), serialised to a small
JSON-able dict (for the Zarr store's attrs) and applied to any later row, including
``/v1/embed`` patches whose scene is unknown. No Ray, no torch, no storage.

With embeddings ``x`` (n, d) and scene ids ``s`` (n,), the steps, in order, each optional:

1. **centre** ``x <- x - m``: ``m`` is the global mean (``center="global"``), or the row's
   own scene mean (``center="scene"``; a row of a scene not seen in the fit — a patch —
   gets the global mean instead, so it is only approximately centred).
2. **nuisance projection** ``x <- x - (x U) U^T``: ``U`` (d, r) holds the r leading
   principal directions of the scene means (the between-scene scatter), i.e. nuisance
   attribute projection (Solomonoff, Quillen & Campbell 2005, "Channel compensation for
   SVM speaker recognition"): directions that mostly say "which scene" are removed for
   every row, scene known or not. They also remove what scenes differ in for real
   (class proportions), so compare it on held-out scenes before use.
3. **whiten** ``x <- x V diag(1 / sqrt(lambda + eps))``: PCA whitening on the rows after
   steps 1-2 (Kessy, Lewin & Strimmer 2018), ``V`` (d, k) the k leading eigenvectors of
   their covariance, ``lambda`` its eigenvalues, ``eps = shrink * mean(lambda)`` so that
   near-null directions are not blown up. Cosine search on whitened rows weighs every
   retained direction equally (Jégou & Chum 2012, "Negative evidences and
   co-occurrences in image retrieval").

Output rows are float32 (n, k), with k = d unless ``dims`` is set.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from antssl.errors import ConfigError

__all__ = ["CENTERS", "Whitening", "fit_whitening"]

Center = Literal["none", "global", "scene"]
CENTERS: tuple[str, ...] = ("none", "global", "scene")
_VERSION = 1


def _pack(a: np.ndarray) -> dict[str, Any]:
    """A float32 array as ``{"shape": [...], "f32le": base64}`` (JSON-able, exact)."""
    arr = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(arr.shape), "f32le": base64.b64encode(arr.tobytes()).decode("ascii")}


def _unpack(d: Any, name: str) -> np.ndarray:
    try:
        shape = [int(v) for v in d["shape"]]
        raw = base64.b64decode(d["f32le"], validate=True)
        arr = np.frombuffer(raw, dtype="<f4").reshape(shape)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"whitening {name}: not a packed float32 array ({err})") from None
    return arr.astype(np.float32)


@dataclass(frozen=True)
class Whitening:
    """A fitted post-hoc transform (module docstring); :meth:`apply` maps (n, d) -> (n, k).

    Attributes:
        center: ``"none"``, ``"global"`` or ``"scene"``.
        mean: (d,) global mean of the fitted rows (used for unseen scenes too).
        scene_means: scene id -> (d,) mean, for ``center="scene"``.
        nuisance: (d, r) orthonormal directions removed (r = 0: none).
        proj: (d, k) whitening matrix ``V diag(1/sqrt(lambda + eps))``, or None.
        n_fit: rows the transform was fitted on.
    """

    center: str
    mean: np.ndarray
    scene_means: dict[str, np.ndarray] = field(default_factory=dict)
    nuisance: np.ndarray | None = None
    proj: np.ndarray | None = None
    n_fit: int = 0

    @property
    def dim_in(self) -> int:
        return int(self.mean.shape[0])

    @property
    def dim_out(self) -> int:
        return self.dim_in if self.proj is None else int(self.proj.shape[1])

    def apply(self, x: np.ndarray, scene: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
        """Transform rows ``x`` (n, d); ``scene`` (n,) ids (None: every scene unknown)."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.dim_in:
            raise ConfigError(
                f"this whitening takes (n, {self.dim_in}) embeddings, got {arr.shape}: it was "
                "fitted on another model's embeddings; refit it"
            )
        if self.center == "global":
            arr = arr - self.mean
        elif self.center == "scene":
            means = np.broadcast_to(self.mean, arr.shape).copy()
            if scene is not None:
                ids = np.asarray(scene).astype(str).ravel()
                if ids.shape[0] != arr.shape[0]:
                    raise ConfigError(f"scene has {ids.shape[0]} ids for {arr.shape[0]} rows")
                for sid in np.unique(ids):
                    if sid in self.scene_means:
                        means[ids == sid] = self.scene_means[sid]
            arr = arr - means
        if self.nuisance is not None and self.nuisance.shape[1]:
            u = self.nuisance.astype(np.float64)
            arr = arr - (arr @ u) @ u.T
        if self.proj is not None:
            arr = arr @ self.proj.astype(np.float64)
        return arr.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (arrays as base64 float32), for the Zarr attrs; see :meth:`from_dict`."""
        return {
            "version": _VERSION,
            "center": self.center,
            "dim_in": self.dim_in,
            "dim_out": self.dim_out,
            "n_fit": int(self.n_fit),
            "mean": _pack(self.mean),
            "scene_means": {k: _pack(v) for k, v in sorted(self.scene_means.items())},
            "nuisance": None if self.nuisance is None else _pack(self.nuisance),
            "proj": None if self.proj is None else _pack(self.proj),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Whitening:
        """The transform :meth:`to_dict` wrote (ConfigError names what is wrong)."""
        if not isinstance(d, Mapping) or d.get("version") != _VERSION:
            got = d.get("version") if isinstance(d, Mapping) else type(d).__name__
            raise ConfigError(f"unsupported whitening record (version {got!r}, want {_VERSION})")
        center = d.get("center")
        if center not in CENTERS:
            raise ConfigError(f"whitening center must be one of {CENTERS}, got {center!r}")
        mean = _unpack(d.get("mean"), "mean")
        means = {str(k): _unpack(v, f"scene mean {k}") for k, v in d.get("scene_means", {}).items()}
        nuis = None if d.get("nuisance") is None else _unpack(d["nuisance"], "nuisance")
        proj = None if d.get("proj") is None else _unpack(d["proj"], "proj")
        dim = mean.shape[0] if mean.ndim == 1 else -1
        bad = (
            dim < 1
            or any(v.shape != (dim,) for v in means.values())
            or (nuis is not None and (nuis.ndim != 2 or nuis.shape[0] != dim))
            or (proj is not None and (proj.ndim != 2 or proj.shape[0] != dim))
        )
        if bad:
            raise ConfigError("whitening record: array shapes do not agree with mean (d,)")
        return cls(str(center), mean, means, nuis, proj, int(d.get("n_fit", 0)))


def fit_whitening(
    x: np.ndarray,
    scene: Sequence[str] | np.ndarray | None = None,
    *,
    center: Center = "global",
    nuisance_dims: int = 0,
    whiten: bool = True,
    dims: int | None = None,
    shrink: float = 0.01,
) -> Whitening:
    """Fit the transform of the module docstring on rows ``x`` (n, d).

    Args:
        x: (n, d) embeddings, finite.
        scene: (n,) scene id per row; needed for ``center="scene"`` and ``nuisance_dims``.
        center: ``"none"``, ``"global"`` or ``"scene"`` (step 1).
        nuisance_dims: r, the scene-mean directions removed (step 2); at most scenes - 1.
        whiten: apply step 3.
        dims: keep the k leading whitened components (default all d).
        shrink: eigenvalue shrinkage, ``eps = shrink * mean(lambda)`` (> 0).
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2 or not np.isfinite(arr).all():
        raise ConfigError(f"fit_whitening needs finite (n >= 2, d) rows, got {arr.shape}")
    n, d = arr.shape
    if center not in CENTERS:
        raise ConfigError(f"center must be one of {CENTERS}, got {center!r}")
    if shrink <= 0 or nuisance_dims < 0 or (dims is not None and not 1 <= dims <= d):
        raise ConfigError(
            f"need shrink > 0, nuisance_dims >= 0 and 1 <= dims <= {d}; got shrink={shrink}, "
            f"nuisance_dims={nuisance_dims}, dims={dims}"
        )
    ids = None if scene is None else np.asarray(scene).astype(str).ravel()
    if ids is not None and ids.shape[0] != n:
        raise ConfigError(f"scene has {ids.shape[0]} ids for {n} rows")
    if ids is None and (center == "scene" or nuisance_dims):
        raise ConfigError("center='scene' and nuisance_dims need the scene id of every row")
    mean = arr.mean(axis=0)
    scene_means: dict[str, np.ndarray] = {}
    if ids is not None:
        scene_means = {s: arr[ids == s].mean(axis=0) for s in np.unique(ids)}
    if nuisance_dims and nuisance_dims > len(scene_means) - 1:
        raise ConfigError(
            f"nuisance_dims={nuisance_dims} needs at least {nuisance_dims + 1} scenes, "
            f"got {len(scene_means)}"
        )
    fitted = Whitening(
        center,
        mean.astype(np.float32),
        {k: v.astype(np.float32) for k, v in scene_means.items()} if center == "scene" else {},
        n_fit=n,
    )
    nuisance = None
    if nuisance_dims:
        sm = np.stack(list(scene_means.values()))
        _, _, vt = np.linalg.svd(sm - sm.mean(axis=0), full_matrices=False)
        nuisance = vt[:nuisance_dims].T.astype(np.float32)
        fitted = Whitening(fitted.center, fitted.mean, fitted.scene_means, nuisance, n_fit=n)
    if not whiten:
        return fitted
    y = fitted.apply(arr, ids).astype(np.float64)
    cov = np.cov(y - y.mean(axis=0), rowvar=False).reshape(d, d)
    lam, vec = np.linalg.eigh(cov)
    order = np.argsort(lam)[::-1][: dims or d]
    lam, vec = np.clip(lam[order], 0.0, None), vec[:, order]
    vec *= np.where(vec[np.abs(vec).argmax(axis=0), np.arange(vec.shape[1])] < 0, -1.0, 1.0)
    eps = shrink * max(float(lam.mean()), 1e-12)
    proj = (vec / np.sqrt(lam + eps)).astype(np.float32)
    return Whitening(fitted.center, fitted.mean, fitted.scene_means, nuisance, proj, n)
