"""A synthetic, labelled demo corpus spoken by espeak-ng: pretraining audio, sentences, keywords, phone alignments."""
