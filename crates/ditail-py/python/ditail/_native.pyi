"""Type stubs of the extension module under the ``ditail`` package (Rust, PyO3). Use the
package's functions: they convert images, fill in the defaults and draw progress."""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

__version__: str

#: Packed RGB bytes with their width and height.
Pixels = Tuple[bytes, int, int]
NativeCallback = Callable[[str, int, int, Optional[Pixels]], Optional[bool]]

class Model:
    """A loaded checkpoint on one device; read-only, shareable between threads."""

    @property
    def name(self) -> str: ...
    @property
    def family(self) -> str:
        """``"sd1"`` or ``"sdxl"``."""
    @property
    def native_size(self) -> int:
        """512 for SD1.x, 1024 for SDXL."""
    @property
    def backend(self) -> str:
        """``"cpu"``, ``"wgpu"`` or ``"cuda"``."""
    @property
    def dtype(self) -> str:
        """``"f32"`` or ``"f16"``."""
    @property
    def loras(self) -> List[Tuple[str, float]]: ...

class Inversion:
    """A content inverted by a source: the latents of every inversion timestep."""

    @property
    def source(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def steps(self) -> int: ...
    @property
    def size(self) -> Tuple[int, int]:
        """``(width, height)`` of the working image."""
    def save(self, path: str) -> None:
        """Writes the latents file (atomically)."""

def load(
    spec: str,
    loras: List[str],
    vae: Optional[str],
    clip_skip: int,
    embeddings: List[str],
    backend: Optional[str],
    dtype: Optional[str],
    device: Optional[int],
) -> Model: ...
def devices() -> List[Dict[str, Any]]: ...
def invert(
    model: Model,
    image: Union[str, Pixels],
    prompt: str,
    settings: Optional[Dict[str, Any]] = None,
    callback: Optional[NativeCallback] = None,
    previews: bool = False,
) -> Inversion: ...
def sample(
    model: Model,
    inversion: Inversion,
    prompt: str,
    settings: Optional[Dict[str, Any]] = None,
    callback: Optional[NativeCallback] = None,
    previews: bool = False,
) -> Pixels: ...
def generate(
    model: Model,
    prompt: str,
    seed: int,
    settings: Optional[Dict[str, Any]] = None,
    callback: Optional[NativeCallback] = None,
    previews: bool = False,
) -> Pixels: ...
def evaluate(
    results: str,
    content: Optional[str],
    prompts: Union[None, bool, str, Dict[str, str]],
    reference: Optional[str],
    inception: Optional[str],
    fid_native: bool,
    clip: str,
    dino: str,
    batch: int,
    dino_antialias: bool,
    backend: Optional[str],
    dtype: Optional[str],
    device: Optional[int],
    callback: Optional[NativeCallback] = None,
) -> Tuple[str, List[str]]:
    """The report as JSON, and the warnings."""
def load_inversion(path: str, model: Model) -> Inversion: ...
def read_image(path: str) -> Pixels: ...
def defaults() -> Dict[str, Any]: ...
