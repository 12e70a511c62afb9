"""What each class-imbalance remedy does to minority-class recall (CIFAR-10 JPEG).

    nice -n 10 python -m benchmarks.imbalance            # ~30 min on 2 CPU cores
    python -m benchmarks.imbalance --epochs=2 --majority=300   # a quick look

1. Builds an imbalanced image folder of symlinks into the CIFAR-10 JPEG copy
   (../shared/datasets/cifar10-jpeg, see its README):
     train/<class>/       the first --majority images of every class, but only
                          --minority_fraction of that for the --minority classes
     validation/<class>/  images 4500-4999 of every class: balanced, and held
                          out (never in train)
2. Trains the seed CNN (configs/cifar10.py, image_size 32, default
   augmentation) once per remedy, all else equal, running main.py as a user
   would:
     none          no remedy
     balanced      --config.class_weights=balanced
     oversample    --config.oversample=True
     minority_aug  --config.minority_augment=flip,rotate,zoom,shift,brightness
     oversample+minority_aug   both (--remedies picks which to run)
3. Evaluates the last checkpoint of each on the balanced validation split
   (--mode=eval) and tabulates per-class recall, the minority classes' mean
   recall, the majority classes' mean recall and overall accuracy.

Writes <out>/results_seed<N>.json (with the commit measured) and .md and
prints the table.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys

if __package__ in (None, ''):  # python benchmarks/imbalance.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # pylint: disable=wrong-import-position

ROOT = common.ROOT
CIFAR = os.path.join(common.SHARED_CIFAR, 'train')
VALIDATION = range(4500, 5000)

REMEDIES = {
    'none': [],
    'balanced': ['--config.class_weights=balanced'],
    'oversample': ['--config.oversample=True'],
    'minority_aug': [
        '--config.minority_augment=flip,rotate,zoom,shift,brightness'],
    'oversample+minority_aug': [
        '--config.oversample=True',
        '--config.minority_augment=flip,rotate,zoom,shift,brightness'],
}


def build_folder(cifar, out, majority, minority_classes, fraction):
  """The symlink folder; returns {'train': {class: n}, 'validation': ...}."""
  data = os.path.join(out, 'data')
  counts = {'train': {}, 'validation': {}}
  for cls in sorted(os.listdir(cifar)):
    n_train = (int(round(majority * fraction)) if cls in minority_classes
               else majority)
    for split, indices in (('train', range(n_train)),
                           ('validation', VALIDATION)):
      common.link_images(os.path.join(cifar, cls),
                         os.path.join(data, split, cls), indices)
      counts[split][cls] = len(indices)
  return data, counts


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join(ROOT, '..', 'runs',
                                                    'imbalance'))
  parser.add_argument('--cifar', default=CIFAR,
                      help='the CIFAR-10 JPEG train folder (<class>/NNNN.jpg)')
  parser.add_argument('--epochs', type=int, default=8)
  parser.add_argument('--majority', type=int, default=2500,
                      help='training images of each majority class')
  parser.add_argument('--minority', default='bird,cat,deer')
  parser.add_argument('--minority_fraction', type=float, default=0.1)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--remedies', default=','.join(REMEDIES))
  args = parser.parse_args()

  out = os.path.abspath(args.out)
  minority = [c.strip() for c in args.minority.split(',') if c.strip()]
  data, counts = build_folder(args.cifar, out, args.majority, minority,
                              args.minority_fraction)
  print(f'data: {data}\n  train {counts["train"]}\n  validation '
        f'{counts["validation"]}', flush=True)
  results = {'machine': f'{platform.machine()}, {os.cpu_count()} CPU cores, '
                        f'{platform.platform()}',
             'commit': common.git_commit(),
             'epochs': args.epochs, 'seed': args.seed, 'counts': counts,
             'minority_classes': minority, 'runs': {}}
  results_path = os.path.join(out, f'results_seed{args.seed}.json')
  if os.path.exists(results_path):  # runs of other remedies, same settings
    with open(results_path) as f:
      previous = json.load(f)
    if all(previous[k] == results[k] for k in ('epochs', 'counts',
                                                'minority_classes')):
      results['runs'] = previous['runs']
  for name in args.remedies.split(','):
    workdir = os.path.join(out, f'{name}_seed{args.seed}')
    # A fresh run: main.py would resume a previous run's checkpoints here.
    shutil.rmtree(workdir, ignore_errors=True)
    workdir_args = [f'--workdir={workdir}']
    train_args = ['--config=configs/cifar10.py', *workdir_args,
                  f'--config.dataset=folder:{data}',
                  f'--config.num_epochs={args.epochs}',
                  f'--config.seed={args.seed}', *REMEDIES[name]]
    print(f'[{name}] python main.py {" ".join(train_args)}', flush=True)
    _, train_seconds, _ = common.main_py(*train_args)
    evaluated, _, _ = common.main_py(*workdir_args, '--mode=eval')
    result = json.loads(evaluated.stdout)
    recall = {c: r['recall'] for c, r in result['per_class'].items()}
    minority_recall = sum(recall[c] for c in minority) / len(minority)
    majority = [c for c in recall if c not in minority]
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      epochs = [json.loads(line) for line in f if line.strip()]
    run = {'command': f'python main.py {" ".join(train_args)}',
           'train_wall_seconds': round(train_seconds, 1),
           'epoch_seconds': [r['epoch_seconds'] for r in epochs],
           'accuracy': result['accuracy'], 'loss': result['loss'],
           'minority_recall': minority_recall,
           'majority_recall': sum(recall[c] for c in majority) / len(majority),
           'macro_f1': result['macro_avg']['f1'], 'recall': recall,
           'step': result['step']}
    results['runs'][name] = run
    print(f'[{name}] {train_seconds:.0f} s: accuracy {run["accuracy"]:.4f}, '
          f'minority recall {minority_recall:.4f} '
          + ', '.join(f'{c} {recall[c]:.3f}' for c in minority), flush=True)
    with open(results_path, 'w') as f:
      json.dump(results, f, indent=2)

  common.write_table(
      os.path.join(out, f'results_seed{args.seed}.md'),
      ['remedy', *(f'{c} recall' for c in minority), 'minority recall (mean)',
       'majority recall (mean)', 'accuracy', 'macro F1', 'train wall time',
       'median epoch'],
      [[name, *(f'{run["recall"][c]:.3f}' for c in minority),
        f'{run["minority_recall"]:.3f}', f'{run["majority_recall"]:.3f}',
        f'{run["accuracy"]:.3f}', f'{run["macro_f1"]:.3f}',
        f'{run["train_wall_seconds"] / 60:.1f} min',
        f'{statistics.median(run["epoch_seconds"]):.0f} s']
       for name, run in results['runs'].items()])

if __name__ == '__main__':
  main()
