"""A small ctypes binding to libespeak-ng: text in, int16 speech and timed phoneme events out.

espeak-ng runs in synchronous mode: `espeak_Synth` returns once the whole text is spoken, after calling our
callback with each block of samples and the events that fall in it. Phoneme events carry espeak's own phoneme
names (Kirshenbaum-like, e.g. "D", "@2", "aI"; pauses start with "_").

Event timing, as espeak-ng 1.51 generates it: a phoneme's event comes after its pre-pause, so a stop's closure
ends the previous phoneme; a vowel after a liquid or nasal gets its event after the vowel's onset; the last
event is the final pause, at the end of the audio except for variants with echo (f2, f4, f5, ...), which ring
on for up to ~120 ms past it. `sample` in the event struct is the exact position; `audio_position` is the same
count in whole milliseconds.

espeak keeps synthesis state between calls (pitch-flutter phase, gain control, echo buffer, libc `rand()` for
breath noise), so the same text can come out a few samples different depending on what was spoken before in
this process. Output is reproducible for a fixed sequence of calls in a fresh process after `seed_noise`;
`ssl_audio.demo.corpus` synthesizes each chunk of utterances in a fresh worker for that reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import NamedTuple

import numpy as np

SONAME = "libespeak-ng.so.1"  # Linux; other systems are found with ctypes.util.find_library
INSTALL_HINT = "apt-get install -y espeak-ng  (Debian package libespeak-ng1)"

# Constants from <espeak-ng/speak_lib.h> (espeak-ng 1.51).
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() when the data is missing
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
POS_CHARACTER = 1
CHARS_UTF8 = 1
EE_OK = 0
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4

RATE_LIMITS = (80, 450)  # words per minute, espeakRATE_MINIMUM/MAXIMUM
PITCH_LIMITS = (0, 100)  # espeak's base pitch scale, 50 = the voice's normal
RANGE_LIMITS = (0, 100)  # pitch range: 0 monotone, 50 normal
BUFFER_MS = 200  # length of each callback block; larger blocks mean fewer Python callbacks
INT16_SCALE = 32768.0


class EspeakUnavailable(RuntimeError):
    """libespeak-ng cannot be loaded or initialised on this machine."""


class _Event(ctypes.Structure):
    # espeak_EVENT; the union `id` is 8 bytes (a phoneme name, or a number/pointer for other events).
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms, = floor(sample * 1000 / rate)
        ("sample", ctypes.c_int),  # the same position in samples from the start of the message
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class Synthesis(NamedTuple):
    """Speech at espeak's native rate (`native_sample_rate()`)."""

    samples: np.ndarray  # (S,) float32 in [-1, 1)
    phones: list[tuple[str, int]]  # (espeak phoneme name, start sample), in order; each lasts until the next


_lock = threading.Lock()  # espeak is one global synthesizer per process
_lib: ctypes.CDLL | None = None
_rate = 0
_blocks: list[np.ndarray] = []
_events: list[tuple[str, int]] = []


def _collect(wav: ctypes._Pointer, num_samples: int, events: ctypes._Pointer) -> int:
    if num_samples > 0:
        _blocks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    i = 0
    while events[i].type != EVENT_LIST_TERMINATED:
        if events[i].type == EVENT_PHONEME:
            _events.append((events[i].id.decode("utf-8", "replace"), events[i].sample))
        i += 1
    return 0  # 0 = continue synthesis


_callback = _Callback(_collect)  # module-level so ctypes never frees it while espeak holds the pointer


def _load() -> ctypes.CDLL:
    try:
        return ctypes.CDLL(SONAME)
    except OSError:
        pass
    path = ctypes.util.find_library("espeak-ng")
    if path is not None:
        try:
            return ctypes.CDLL(path)
        except OSError:
            pass
    raise EspeakUnavailable(f"libespeak-ng ({SONAME}) not found; install it with: {INSTALL_HINT}")


def _library() -> ctypes.CDLL:
    """Load and initialise libespeak-ng once per process (call with `_lock` held)."""
    global _lib, _rate
    if _lib is None:
        lib = _load()
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, None, INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakUnavailable(f"espeak_Initialize failed (returned {rate}); reinstall with: {INSTALL_HINT}")
        lib.espeak_SetSynthCallback(_callback)
        _lib, _rate = lib, rate
    return _lib


def initialised() -> bool:
    """Whether this process has loaded espeak (and so may carry state from earlier synthesis)."""
    return _lib is not None


def native_sample_rate() -> int:
    """espeak's output rate in Hz (22050 for the formant voices)."""
    with _lock:
        _library()
        return _rate


def seed_noise(seed: int) -> None:
    """Seed libc `rand()`, which espeak uses for breath and Klatt noise; call before a reproducible sequence."""
    ctypes.CDLL(None).srand(ctypes.c_uint(seed & 0xFFFFFFFF))


def _check_range(name: str, value: int, limits: tuple[int, int]) -> None:
    if not limits[0] <= value <= limits[1]:
        raise ValueError(f"espeak {name}={value} is outside [{limits[0]}, {limits[1]}]")


def synthesize(text: str, voice: str = "en", *, rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> Synthesis:
    """Speak `text` with `voice` ("language[+variant]", e.g. "en-us+f2") at `rate` words per minute.

    Returns float32 samples at `native_sample_rate()` and the phoneme events as (name, start sample). Event
    positions come from espeak's `sample` field, the exact count that its `audio_position` (ms) is rounded from.
    Unknown languages raise ValueError; espeak silently ignores an unknown variant.
    """
    _check_range("rate", rate, RATE_LIMITS)
    _check_range("pitch", pitch, PITCH_LIMITS)
    _check_range("pitch_range", pitch_range, RANGE_LIMITS)
    data = text.encode("utf-8")
    with _lock:
        lib = _library()
        if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != EE_OK:
            raise ValueError(f"espeak voice {voice!r} not found (see `espeak-ng --voices`)")
        # Set on every call: espeak keeps parameters from the previous one.
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range)):
            lib.espeak_SetParameter(param, value, 0)
        _blocks.clear()
        _events.clear()
        status = lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if status != EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} for text {text[:40]!r}")
        pcm = np.concatenate(_blocks) if _blocks else np.zeros(0, dtype=np.int16)
        phones = list(_events)
    return Synthesis(samples=pcm.astype(np.float32) / INT16_SCALE, phones=phones)
