"""Transforms keep image and label aligned; the sampler keeps batches to one dataset and splits
them across ranks; loading is reproducible with any number of workers."""
import numpy as np
import pytest
import torch

from dsspn_cli.data.sampler import DatasetBatchSampler
from dsspn_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform, subsample
from dsspn_cli.errors import UserError


def coordinate_pair(h=40, w=60):
    """An image whose red channel encodes the column and a label holding the same column."""
    cols = np.tile(np.arange(w, dtype=np.int64), (h, 1))
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = cols * 4
    return image, cols


def denormalised_red(image_t):
    return (image_t[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255 / 4


@pytest.mark.parametrize("seed", range(8))
def test_crop_flip_keep_image_and_label_aligned(seed):
    image, cols = coordinate_pair()
    transform = TrainTransform(crop=(24, 32), scale=(1.0, 1.0))
    image_t, target_t = transform(image, cols, torch.Generator().manual_seed(seed))
    assert image_t.shape == (3, 24, 32) and target_t.shape == (24, 32)
    assert torch.allclose(denormalised_red(image_t), target_t.float(), atol=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_rescale_keeps_alignment_up_to_interpolation(seed):
    image, cols = coordinate_pair()
    transform = TrainTransform(crop=(30, 30), scale=(0.5, 2.0))
    image_t, target_t = transform(image, cols, torch.Generator().manual_seed(seed))
    valid = target_t >= 0
    error = (denormalised_red(image_t) - target_t.float()).abs()[valid]
    assert error.max() <= 1.01      # bilinear vs nearest differ by at most one column


def test_padding_uses_ignore_and_mean_colour():
    image, cols = coordinate_pair(10, 10)
    transform = TrainTransform(crop=(32, 32), scale=(1.0, 1.0), flip=False)
    image_t, target_t = transform(image, cols, torch.Generator().manual_seed(0))
    assert (target_t[10:] == -1).all() and (target_t[:, 10:] == -1).all()
    assert (image_t[:, 10:] == 0).all()


def test_label_at_one_eighth():
    target = torch.arange(64).view(8, 8).repeat(4, 4)
    assert subsample(target, 8).shape == (4, 4)
    image, cols = coordinate_pair(64, 64)
    _, small = TrainTransform(crop=(64, 64), scale=(1, 1), flip=False, label_stride=8)(
        image, cols, torch.Generator().manual_seed(0))
    assert small.shape == (8, 8) and small[0].tolist() == list(range(0, 64, 8))
    image, cols = coordinate_pair(65, 65)
    _, small = TrainTransform(crop=(65, 65), scale=(1, 1), flip=False, label_stride=8)(
        image, cols, torch.Generator().manual_seed(0))
    assert small.shape == (9, 9)              # ceil(65 / 8), like the backbone's features


def test_same_seed_same_augmentation():
    image, cols = coordinate_pair()
    transform = TrainTransform(crop=(20, 20))
    a = transform(image, cols, torch.Generator().manual_seed(3))
    b = transform(image, cols, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_every_batch_from_one_dataset_with_weights():
    sizes = [40, 400]
    sampler = DatasetBatchSampler(sizes, batch_size=4, weights=[1, 1], seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 110
    origin = [0 if max(i for i, _ in b) < 40 else 1 for b in batches]
    for batch in batches:
        assert len({i < 40 for i, _ in batch}) == 1        # one dataset per batch
    assert 0.35 < np.mean(origin) < 0.65                   # equal weights -> about half each


def test_ranks_split_the_epoch_without_overlap():
    sizes = [64, 32]
    world = 3
    per_rank = [list(DatasetBatchSampler(sizes, 4, seed=5, rank=r, world_size=world))
                 for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1            # equal steps on every rank
    whole = list(DatasetBatchSampler(sizes, 4, seed=5)).__len__()
    assert len(per_rank[0]) == whole // world
    seen = [tuple(i for i, _ in batch) for rank in per_rank for batch in rank]
    assert len(seen) == len(set(seen))                     # no batch on two ranks


def test_epochs_differ_and_repeat():
    sampler = DatasetBatchSampler([32], 4, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first and second != first


def test_sampler_errors():
    with pytest.raises(UserError, match="fewer than the batch size"):
        DatasetBatchSampler([3], 4, names=["ade"])
    with pytest.raises(UserError, match="weights"):
        DatasetBatchSampler([8, 8], 4, weights=[1])


def test_default_epoch_uses_every_batch_once():
    sampler = DatasetBatchSampler([20, 12], 4, seed=2)
    batches = list(sampler)
    assert len(batches) == 8
    seen = sorted(i for batch in batches for i, _ in batch)
    assert seen == list(range(32))                     # 5 + 3 full batches, each image once


def test_zero_weight_dataset_may_be_small_and_nan_is_refused():
    sampler = DatasetBatchSampler([40, 2], 4, weights=[1, 0])
    assert all(i < 40 for batch in sampler for i, _ in batch)
    with pytest.raises(UserError, match="weights"):
        DatasetBatchSampler([8, 8], 4, weights=[1, float("nan")])


def test_per_dataset_batch_sizes_split_whole_batches_over_ranks():
    """batch_size {coco: 4, cityscapes: 6}: every batch holds one dataset's images at its
    own size, and the ranks of a job share an epoch's batches without overlap."""
    from dsspn_cli.data.sampler import DatasetBatchSampler

    sizes, batch = [40, 60], [4, 6]
    seen = []
    for rank in range(2):
        sampler = DatasetBatchSampler(sizes, batch, seed=3, rank=rank, world_size=2)
        assert len(sampler) == (10 + 10) // 2
        for indices in sampler:
            dataset = 0 if indices[0][0] < 40 else 1
            assert len(indices) == batch[dataset]
            assert all((i < 40) == (dataset == 0) for i, _ in indices)
            seen += [i for i, _ in indices]
    assert len(seen) == len(set(seen)) == 100
