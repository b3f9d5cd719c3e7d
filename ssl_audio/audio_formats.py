"""The file extensions `ssl_audio.audio.load_audio` decodes, in a module light enough for the CLI's help text.

`load_audio` reads through libsndfile (via soundfile), which decodes every container below; MP3 needs
libsndfile >= 1.1, which soundfile >= 0.12 bundles. The manifest scanner lists exactly these extensions.
"""

from __future__ import annotations

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".caf", ".w64", ".au")
