"""A few hundred photos of your own: from scratch against fine-tuned weights.

    nice -n 10 python -m benchmarks.few_photos            # ~1 h on 2 CPU cores
    python -m benchmarks.few_photos --runs=cnn            # one of them

1. Builds a small own-photos task as an image folder of symlinks into the
   CIFAR-10 JPEG copy (../shared/datasets/cifar10-jpeg, see its README):
   <out>/data/<class>/ holds images 0000-0199 of every class (--per_class);
   training holds out half of every class for validation, as it holds out
   validation_fraction of any class folder (--config.validation_fraction=0.5):
   100 training and 100 validation images per class, 1,000 of each.
2. Trains each model with its recipe, all else equal, running main.py as a
   user would (a fresh workdir each):
     cnn                 the seed CNN, configs/cifar10.py (Adam, rotation,
                         flip, zoom, shift, brightness, dropout 0.5) at its
                         32x32 input, 100 epochs (16 steps each)
     fast_cifar          configs/cifar10_fast.py (airbench94) at 32x32, its
                         schedule stretched to 50 epochs of batch 100 (10
                         steps each; 500 steps, airbench's own count) with
                         the learning rate scaled to the batch (1.5 x
                         100/1024) and its epoch-valued keys scaled by 50/12
     efficientnet_lite0  configs/finetune_folder.py unchanged: the ImageNet
                         weights of ../shared/pretrained, 224x224 (upscaled),
                         2 epochs head only, then every layer, 12 epochs
   The recipes were fixed before the first run; nothing here was tuned on
   this validation split.
3. Reads each run's metrics.jsonl: the last epoch's validation accuracy (with
   test-time augmentation where the recipe has it), the best epoch's, and
   the run's wall time (python main.py start to exit: imports, compiles,
   every validation).

Writes <out>/results.json (with the commit and machine) and results.md and
prints the table.
"""

import argparse
import json
import os
import shutil
import sys

if __package__ in (None, ''):  # python benchmarks/few_photos.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # pylint: disable=wrong-import-position

CIFAR = os.path.join(common.SHARED_CIFAR, 'train')
FAST_EPOCHS = 50
_FAST_STRETCH = FAST_EPOCHS / 12  # configs/cifar10_fast.py has 12 epochs

RECIPES = {
    'cnn': ['--config=configs/cifar10.py', '--config.num_epochs=100'],
    'fast_cifar': [
        '--config=configs/cifar10_fast.py', f'--config.num_epochs={FAST_EPOCHS}',
        '--config.batch_size=100', '--config.eval_batch_size=500',
        f'--config.learning_rate={1.5 * 100 / 1024:.4f}',
        f'--config.warmup_epochs={2.76 * _FAST_STRETCH:.2f}',
        f'--config.whiten_bias_epochs={3 * _FAST_STRETCH:.2f}',
        f'--config.lookahead_start_epochs={3 * _FAST_STRETCH:.2f}'],
    'efficientnet_lite0': ['--config=configs/finetune_folder.py'],
}


def build_folder(cifar, out, per_class):
  """<out>/data/<class>/ with images 0..per_class-1 of each class."""
  data = os.path.join(out, 'data')
  for cls in sorted(os.listdir(cifar)):
    common.link_images(os.path.join(cifar, cls), os.path.join(data, cls),
                       range(per_class))
  return data


def accuracy(record):
  """The epoch's validation accuracy as its recipe reports it (TTA's where
  the recipe has it)."""
  return record.get('validation_tta_accuracy', record['validation_accuracy'])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join(common.ROOT, '..', 'runs',
                                                    'few_photos'))
  parser.add_argument('--cifar', default=CIFAR,
                      help='the CIFAR-10 JPEG train folder (<class>/NNNN.jpg)')
  parser.add_argument('--per_class', type=int, default=200,
                      help='images per class; half are held out')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--runs', default=','.join(RECIPES))
  args = parser.parse_args()

  out = os.path.abspath(args.out)
  data = build_folder(args.cifar, out, args.per_class)
  results_path = os.path.join(out, f'results_seed{args.seed}.json')
  results = {'machine': common.machine(malloc_tuned=True),
             'commit': common.git_commit(), 'per_class': args.per_class,
             'seed': args.seed, 'runs': {}}
  if os.path.exists(results_path):  # other runs of the same task
    with open(results_path) as f:
      previous = json.load(f)
    if previous['per_class'] == args.per_class:
      results['runs'] = previous['runs']
  for name in args.runs.split(','):
    workdir = os.path.join(out, f'{name}_seed{args.seed}')
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, not a resume
    train_args = [*RECIPES[name], f'--workdir={workdir}',
                  f'--config.dataset=folder:{data}',
                  '--config.validation_fraction=0.5',
                  f'--config.seed={args.seed}']
    command = f'python main.py {" ".join(train_args)}'
    print(f'[{name}] {command}', flush=True)
    _, seconds, _ = common.main_py(*train_args)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      epochs = [json.loads(line) for line in f if line.strip()]
    best = max(epochs, key=accuracy)
    run = {'command': command, 'commit': common.git_commit(),
           'wall_seconds': round(seconds, 1),
           'epochs': len(epochs), 'steps': epochs[-1]['step'],
           'validation_accuracy': accuracy(epochs[-1]),
           'best_epoch': best['epoch'], 'best_accuracy': accuracy(best),
           'train_accuracy': epochs[-1]['train_accuracy'],
           'curve': [round(accuracy(r), 4) for r in epochs],
           'epoch_seconds': [r['epoch_seconds'] for r in epochs]}
    results['runs'][name] = run
    print(f'[{name}] {seconds / 60:.1f} min: validation accuracy '
          f'{run["validation_accuracy"]:.4f} (best {run["best_accuracy"]:.4f} '
          f'at epoch {run["best_epoch"]})', flush=True)
    with open(results_path, 'w') as f:
      json.dump(results, f, indent=2)

  common.write_table(
      os.path.join(out, f'results_seed{args.seed}.md'),
      ['model', 'recipe', 'validation accuracy (last epoch)', 'best epoch',
       'train accuracy', 'wall time'],
      [[name, f'{RECIPES[name][0].split("=")[1]}, {run["epochs"]} epochs',
        f'{run["validation_accuracy"]:.3f}',
        f'{run["best_accuracy"]:.3f} (epoch {run["best_epoch"]})',
        f'{run["train_accuracy"]:.3f}', f'{run["wall_seconds"] / 60:.1f} min']
       for name, run in results['runs'].items()])

if __name__ == '__main__':
  main()
