"""Text classification with a Transformer block (token + position embeddings).

Adapted from keras-io `examples/nlp/text_classification_with_transformer.py`
(commit 1909c6710cd3f5af6401f1176dcee9e26781b4f3; Apache-2.0, Apoorv Nandan).
Model, compile and fit settings as published; IMDB is replaced by synthetic
padded reviews (200 tokens, vocabulary 20000). Shrunk: 320 reviews (not
25000), epochs 2 as published, the validation set left out.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from . import Setup, token_reviews

SOURCE = "examples/nlp/text_classification_with_transformer.py"
COMMIT = "1909c6710cd3f5af6401f1176dcee9e26781b4f3"
NOT_APPLICABLE = {
    "nan_label": "sparse integer labels: TF raises on a NaN label "
                 "(SparseSoftmaxCrossEntropyWithLogits), before any gradient",
    "inf_label": "sparse integer labels: TF raises on an inf label too",
    "nan_input": "token ids: TF raises in the Embedding gather on a NaN id",
    "feature_x1e4": "token ids: a scaled id is out of the vocabulary, TF raises",
    "targets_x1e5": "sparse integer labels: a scaled label is out of range, TF raises",
    "fp16_overflow": "under mixed_float16 the model casts its float32 Input (as published) "
                     "to float16, which rounds token ids above 2048 (19999 -> 20000): "
                     "an id out of the vocabulary, TF raises in the Embedding gather",
}

vocab_size = 20000
maxlen = 200
embed_dim = 32
num_heads = 2
ff_dim = 32


class TransformerBlock(layers.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
        super().__init__()
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential(
            [layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs):
        attn_output = self.dropout1(self.att(inputs, inputs))
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.dropout2(self.ffn(out1))
        return self.layernorm2(out1 + ffn_output)


class TokenAndPositionEmbedding(layers.Layer):
    def __init__(self, maxlen, vocab_size, embed_dim):
        super().__init__()
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        positions = self.pos_emb(ops.arange(start=0, stop=ops.shape(x)[-1], step=1))
        return self.token_emb(x) + positions


def make_data(seed: int):
    x, y = token_reviews(320, maxlen, vocab_size, seed=seed)
    return x.astype("int32"), y.astype("int64")


def build(x, y) -> Setup:
    inputs = layers.Input(shape=(maxlen,))
    h = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)(inputs)
    h = TransformerBlock(embed_dim, num_heads, ff_dim)(h)
    h = layers.GlobalAveragePooling1D()(h)
    h = layers.Dropout(0.1)(h)
    h = layers.Dense(20, activation="relu")(h)
    h = layers.Dropout(0.1)(h)
    outputs = layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return Setup(model, x, y, dict(batch_size=32, epochs=2), task="sparse")
