"""The recurrent image codec (Toderici et al. 2017, Johnston et al. 2018): its own pipeline.

model (ConvGRU encoder, binarizer, decoder), loss (SSIM-weighted L1), train, entropy
(adaptive context-model binary rANS), stream (the .rnnc format), encode (progressive and
spatially adaptive encoding), evaluate (rate-distortion curves against Pillow's codecs).
"""
