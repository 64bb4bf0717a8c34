"""DeepN-JPEG (Liu et al. 2018): DNN-oriented JPEG quantization tables."""
