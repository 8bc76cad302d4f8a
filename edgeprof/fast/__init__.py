"""edgeprof-fast: edgeprof's own batch-1 decoder for the Llama/Qwen2/Mistral family.

weights.py  fused tensors (qkv, gate+up) taken from a loaded HF model; bf16 or int4
int4.py     GPTQ-format int4 <-> torch tinygemm packing
kernels.py  Triton kernels (GPU) and torch reference ops (CPU) with one interface
model.py    the step: token in -> next token out, all on the device, no host sync
decoder.py  the registered Decoder: one CUDA graph per session, replayed per token
"""
