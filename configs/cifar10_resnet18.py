"""CIFAR-10: ResNet-18 (3x3 stem, 11.2M parameters), SGD with Nesterov
momentum, cosine schedule, 30 epochs, flip + 4-pixel translation.

    python main.py --config=configs/cifar10_resnet18.py \
      --workdir=runs/cifar10_resnet18 \
      --config.dataset=folder:../shared/datasets/cifar10-jpeg

Result: not measured (docs/results.md#not-measured); meant for a GPU or TPU.

The recipe is the common short CIFAR ResNet-18 one:

* learning_rate 0.1 for batch 128 (linear scaling rule: 0.1 x batch / 128
  for another batch size), one epoch of linear warmup, then cosine decay to 0.
* weight_decay 5e-3: this program's weight decay is decoupled (added to the
  update after the momentum, and multiplied by the learning rate: the update
  is -lr(t) (m(t) + weight_decay * w), train_state.create_optimizer). The usual recipe's 5e-4 is
  a coupled L2 term (added to the gradient, so it goes through the momentum
  buffer): each step it decays the weights by lr * 5e-4 * sum_k 0.9^k w_(t-k),
  which is lr * 5e-4 / (1 - 0.9) * w = lr * 5e-3 * w while the weights change
  little over the ~10 steps the buffer remembers (the same factor with
  Nesterov: g + 0.9 * m -> 1 / (1 - 0.9) times the gradient). So 5e-3 here is
  the usual 5e-4; with a coupled optimizer it would be 5e-4.
* No dropout (the ResNet has none), no label smoothing, no EMA of the
  weights; test-time augmentation averages each image with its mirror image.
"""

from imgclf_jax.config import keys


def get_config():
  config = keys.get_config()
  config.dataset = 'cifar10'
  config.image_size = 32

  config.model = 'resnet18'
  config.dropout_rate = 0.0

  config.optimizer = 'sgd'
  config.momentum = 0.9
  config.nesterov = True
  config.batch_size = 128
  config.learning_rate = 0.1        # for batch 128: 0.1 * batch_size / 128
  config.weight_decay = 5e-3        # decoupled; = coupled L2 5e-4 (docstring)
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 1.0
  config.num_epochs = 30
  config.label_smoothing = 0.0
  config.ema_decay = 0.0

  config.augment = 'flip,translate'
  config.translate_pixels = 4
  config.tta = 'flip'
  return config
