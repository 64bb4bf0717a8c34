"""Compression Helps Deep Learning in Image Classification (Yang et al. 2021).

En-Hui Yang, Hossam Amer, Yanbing Jiang. Entropy 23(7):881, 2021.
https://doi.org/10.3390/e23070881
"""
