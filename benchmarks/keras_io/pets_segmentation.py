"""Image segmentation with a U-Net-like Xception-style net: 3-class per-pixel masks, from scratch.

Adapted from keras-io `examples/vision/oxford_pets_image_segmentation.py`
(commit e70ae747b458a92dfd71486bf65f4eb2d265f7b0; Apache-2.0, fchollet).
The model (`get_model`: an entry Conv2D(32, 3, strides 2) with
BatchNormalization and relu; three downsampling blocks of 64, 128, 256
filters, each two relu -> SeparableConv2D(3) -> BatchNormalization, a
MaxPooling2D(3, strides 2) and a strided 1x1 Conv2D residual added back;
four upsampling blocks of 256, 128, 64, 32 filters, each two relu ->
Conv2DTranspose(3) -> BatchNormalization, an UpSampling2D(2) and an
upsampled 1x1 Conv2D residual added back; a per-pixel Conv2D(3, 3) softmax),
compile ("rmsprop", "sparse_categorical_crossentropy", no metrics) and fit
(batch 32, the last 1000 of 7390 shuffled samples kept for validation: here
`validation_split=0.135`, its share) as published, on float32 RGB images
with raw pixel values in [0, 255] (the script's `load_img` arrays, not
rescaled) and uint8 masks of shape (n, h, w, 1) holding 0 (object), 1
(background), 2 (border), the trimap labels minus one. Left out: its
`ModelCheckpoint` (saves the best model as a file, training is the same).
The `keras.utils.Sequence` (batches in order, the last partial batch
dropped) is given to `fit` as numpy arrays with `batch_size=32`, which
shuffles them; the training part is a whole number of batches. The Oxford
pets replaced by synthetic images: one or two rotated ellipses or
rectangles, each of its own tinted colour with texture noise, on a tinted
background with a random gradient and pixel noise; the shapes are 50 to 110
levels brighter than their image's background, whose brightness varies
from image to image (30 to 140), so that pixel values of shapes and
backgrounds overlap across images and a pixel is classed from its
surroundings, not its value alone; and their trimap: the shapes' interior,
the background, and a border band about two pixels wide along their
outline (the 3x3 dilation less the 3x3 erosion of the shapes). Shrunk: 370
images (320 training, 50 validation; not 7390), epochs 4 (not 15): 40
optimizer steps; and the image size 64x64, not 160x160 (the architecture
unchanged; 64 is divisible by the net's 16-fold downsampling): at 160x160
one step of batch 32 costs about 6x as much, and 40 steps would take
minutes on 2 CPU cores. One plain fit took 64 to 76 s of wall time on 2
cores shared at a load of 5 to 9 (32 s of CPU time).

Held out (a sixth round, session 8): added after the fifth held-out run,
run once with the rules as they then were.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from . import Setup

SOURCE = "examples/vision/oxford_pets_image_segmentation.py"
COMMIT = "e70ae747b458a92dfd71486bf65f4eb2d265f7b0"
NOT_APPLICABLE = {
    "nan_label": "uint8 per-pixel class masks, as published, cannot hold NaN "
                 "(an inf_input break instead)",
    "targets_x1e5": "sparse integer masks: a scaled class index is out of range, TF raises",
}

img_size = (64, 64)  # (160, 160) as published
num_classes = 3
batch_size = 32
epochs = 4  # 15 as published
N, VAL_SAMPLES = 370, 50  # 7390 and 1000 as published
validation_split = 0.135  # 1000 / 7390: floor(370 * 0.865) = 320 training samples


def _neighbourhood(mask: np.ndarray, op) -> np.ndarray:
    """`op` (np.maximum: dilation, np.minimum: erosion) of a 2D bool mask over 3x3."""
    h, w = mask.shape
    padded = np.pad(mask, 1, mode="edge")
    out = mask.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out = op(out, padded[dy:dy + h, dx:dx + w])
    return out


def _sample(rng, h: int, w: int):
    """One image (h, w, 3) in [0, 255] and its trimap (h, w): 0 object, 1 background, 2 border."""
    yy, xx = np.mgrid[0:h, 0:w].astype("float64")
    level = rng.uniform(30, 140)  # the background's brightness; the shapes' is above it
    background = level + rng.uniform(-25, 25, 3)
    gradient = rng.uniform(-30, 30, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5))[..., None]
    image = background + 2 * ramp * gradient + rng.normal(0.0, 25.0, (h, w, 3))
    objects = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 3))):
        colour = level + rng.uniform(50, 110) + rng.uniform(-25, 25, 3)
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        a, b = rng.uniform(0.12, 0.3, 2) * min(h, w)
        theta = rng.uniform(0, np.pi)
        u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
        v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
        if rng.random() < 0.5:
            shape = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        else:
            shape = (np.abs(u) <= a) & (np.abs(v) <= 0.8 * b)
        image[shape] = colour + rng.normal(0.0, 25.0, (int(shape.sum()), 3))
        objects |= shape
    border = _neighbourhood(objects, np.maximum) & ~_neighbourhood(objects, np.minimum)
    trimap = np.where(border, 2, np.where(objects, 0, 1))
    return np.clip(image, 0, 255), trimap


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    h, w = img_size
    x = np.zeros((N,) + img_size + (3,), dtype="float32")
    y = np.zeros((N,) + img_size + (1,), dtype="uint8")
    for i in range(N):
        image, trimap = _sample(rng, h, w)
        x[i] = image
        y[i, ..., 0] = trimap
    return x, y


def get_model(img_size, num_classes):
    inputs = keras.Input(shape=img_size + (3,))

    ### [First half of the network: downsampling inputs] ###

    # Entry block
    x = layers.Conv2D(32, 3, strides=2, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)

    previous_block_activation = x  # Set aside residual

    # Blocks 1, 2, 3 are identical apart from the feature depth.
    for filters in [64, 128, 256]:
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)

        # Project residual
        residual = layers.Conv2D(filters, 1, strides=2, padding="same")(
            previous_block_activation
        )
        x = layers.add([x, residual])  # Add back residual
        previous_block_activation = x  # Set aside next residual

    ### [Second half of the network: upsampling inputs] ###

    for filters in [256, 128, 64, 32]:
        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.UpSampling2D(2)(x)

        # Project residual
        residual = layers.UpSampling2D(2)(previous_block_activation)
        residual = layers.Conv2D(filters, 1, padding="same")(residual)
        x = layers.add([x, residual])  # Add back residual
        previous_block_activation = x  # Set aside next residual

    # Add a per-pixel classification layer
    outputs = layers.Conv2D(num_classes, 3, activation="softmax", padding="same")(x)

    # Define the model
    model = keras.Model(inputs, outputs)
    return model


def build(x, y) -> Setup:
    model = get_model(img_size, num_classes)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    return Setup(model, x, y, dict(batch_size=batch_size, epochs=epochs,
                                   validation_split=validation_split),
                 task="sparse")
