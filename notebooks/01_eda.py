# %% [markdown]
# # 01 · Exploring the data
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/01_eda.ipynb)
#
# What is in the data set before any model sees it: how rare each diagnosis is, how many images
# show the same lesion (why we split by lesion), who the patients are, how large the lesions
# are, and what each class looks like. The lesion-level split made here (and stored in
# `split_path`) is the one every other notebook uses.

# %% tags=["parameters"]
data_dir = "data"                  # HAM10000 layout (see data/README.md); the synthetic demo if empty
split_fractions = [0.7, 0.15, 0.15]
split_path = "reports/split.csv"
seed = 0
max_samples = None                 # use at most this many images (whole lesions); None: all
max_mask_images = 3000             # masks read to measure lesion size (a random sample)
per_class = 5                      # example images per diagnosis
on_bad_data = "raise"
reports_dir = "reports"
repo_url = "https://github.com/OWNER/REPO"  # cloned on Colab to install skin_utils

# %%
import subprocess, sys, os  # noqa: E401
if "google.colab" in sys.modules and not os.path.isdir("/content/repo"):
    subprocess.check_call(["git", "clone", "--depth", "1", repo_url, "/content/repo"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/repo"])
    sys.path.insert(0, "/content/repo")
    os.chdir("/content/repo")

# %%
import numpy as np

from skin_utils import CLASS_NAMES, viz
from skin_utils.nb import report
from skin_utils.data.eda import lesion_area_fractions, sample_per_class
from skin_utils.nb.params import check_params
from skin_utils.nb.paths import resolve
from skin_utils.data.splits import split_summary
from skin_utils.data.loading import load_data

params = check_params(dict(data_dir=data_dir, split_fractions=split_fractions, split_path=split_path, seed=seed,
                           max_samples=max_samples, max_mask_images=max_mask_images, per_class=per_class,
                           on_bad_data=on_bad_data, reports_dir=reports_dir))
reports = resolve(reports_dir)
figures = reports / "figures"

# %%
data = load_data(data_dir, split_path=split_path, split_fractions=split_fractions, seed=seed,
                 max_samples=max_samples, on_bad_data=on_bad_data, cache=False)
index = data.index
data.describe()

# %% [markdown]
# ## How rare is each diagnosis?
# Always answering the majority class already scores its share as accuracy: this is the bar
# every accuracy in the later notebooks has to be read against.

# %%
fig = viz.plot_class_distribution(index["label"], title=f"Diagnoses · {data.name}")
viz.publish(fig, figures / "eda_class_distribution.png")
counts = index["dx"].value_counts().reindex(CLASS_NAMES, fill_value=0)
majority_share = counts.max() / counts.sum()
print(f"Always answering {counts.idxmax()} would score accuracy {majority_share:.3f}, balanced accuracy {1 / (counts > 0).sum():.3f}.")

# %% [markdown]
# ## Several images per lesion
# Images of one lesion are near-duplicates; a split by image would put them on both sides.

# %%
fig = viz.plot_images_per_lesion(index["lesion_id"], title=f"Images per lesion · {data.name}")
viz.publish(fig, figures / "eda_images_per_lesion.png")
per_lesion = index.groupby("lesion_id").size()
print(f"{len(index)} images of {len(per_lesion)} lesions; {(per_lesion > 1).sum()} lesions have more than one image.")

# %% [markdown]
# ## The lesion-level split

# %%
split_table = split_summary(data.split, CLASS_NAMES)
fig = viz.plot_split_counts(data.split, title=f"Images and lesions per split · {data.name}")
viz.publish(fig, figures / "eda_split_counts.png")
split_table

# %% [markdown]
# ## Patients: age, sex, site

# %%
fig = viz.plot_metadata(index, title=f"Patient metadata · {data.name}")
viz.publish(fig, figures / "eda_metadata.png")

# %% [markdown]
# ## How large are the lesions?

# %%
areas, area_labels = lesion_area_fractions(index, max_images=max_mask_images, seed=seed)
fig = viz.plot_mask_area(areas, area_labels, title=f"Lesion share of the image · {data.name}")
viz.publish(fig, figures / "eda_mask_area.png")
print(f"median lesion share {np.median(areas):.2f} over {len(areas)} masks")

# %% [markdown]
# ## What each diagnosis looks like (expert mask in green)

# %%
images, masks, labels = sample_per_class(index, per_class=per_class, seed=seed)
fig = viz.plot_sample_grid(images, labels, masks=masks, per_class=per_class,
                             title=f"Examples per diagnosis · {data.name}")
viz.publish(fig, figures / "eda_samples.png")

# %%
report.write_section(reports, "01_eda", "Data", f"""
**{data.name}**: {len(index)} images of {index['lesion_id'].nunique()} lesions, labels from
`{index.attrs.get('label_source')}`. Always answering **{counts.idxmax()}** scores accuracy
{majority_share:.3f} (balanced accuracy {1 / (counts > 0).sum():.3f}): the baseline for every accuracy below.

![classes](figures/eda_class_distribution.png)
![images per lesion](figures/eda_images_per_lesion.png)

Split by lesion (fractions {split_fractions}, seed {seed}; stored in `{split_path}`):

{report.markdown_table(split_table)}

![split](figures/eda_split_counts.png)
![metadata](figures/eda_metadata.png)
![mask area](figures/eda_mask_area.png)
![samples](figures/eda_samples.png)
""", params=params, data=data.describe())
