# %% [markdown]
# # 01 · Exploring the data
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/01_eda.ipynb)
#
# What is in the data set before any model sees it: how rare each diagnosis is, how many images
# show the same lesion (why we split by lesion), who the patients are, how large the lesions
# are, and what each class looks like. The lesion-level split made here (and stored in
# `split_path`) is the one every other notebook uses.

# %% tags=["parameters"]
from typing import Optional

data_dir: str = "data"                   # HAM10000 layout (see data/README.md); the synthetic demo if empty
split_fractions: list[float] = [0.7, 0.15, 0.15]  # train, val, test shares of the lesions
split_path: str = "reports/split.csv"    # the lesion-level split, made here and used by every notebook
seed: int = 0
max_samples: Optional[int] = None        # use at most this many images (whole lesions); None: all
max_mask_images: Optional[int] = 3000    # masks read to measure lesion size (a random sample); None: all
per_class: int = 5                       # example images per diagnosis
on_bad_data: str = "raise"               # "raise": stop on bad files with a report; "skip": leave them out
reports_dir: str = "reports"
repo_url: str = "https://github.com/OWNER/REPO"  # cloned on Colab to install skin_utils

# %%
# Colab only (nothing happens elsewhere): clone this repository once, install it, and work inside it on every run
import os, subprocess, sys  # noqa: E401
if "google.colab" in sys.modules:
    if repo_url.rstrip("/").endswith("/OWNER/REPO"):
        sys.exit(f"repo_url is still the placeholder {repo_url!r}: set it in the first code cell to the GitHub "
                 "address of this repository (e.g. https://github.com/you/skin-lesions), or run "
                 "`python scripts/set_github_repo.py you/skin-lesions` in a clone and push.")
    if not os.path.isdir("/content/repo/.git"):
        subprocess.check_call(["git", "clone", "--depth", "1", repo_url, "/content/repo"])
    if subprocess.run([sys.executable, "-m", "pip", "show", "-q", "skin_utils"]).returncode != 0:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/repo"])
    if "/content/repo" not in sys.path:
        sys.path.insert(0, "/content/repo")
    os.chdir("/content/repo")

# %%
import numpy as np

from skin_utils import CLASS_NAMES, plots
from skin_utils import report
from skin_utils.data import lesion_area_fractions, sample_per_class
from skin_utils.config import EdaConfig, resolve
from skin_utils.data import split_summary
from skin_utils.data import load_data

params = EdaConfig.from_notebook(globals()).to_dict()  # checked: a wrong value or a misspelt name stops here
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
#
# *Reading the figure:* one bar per diagnosis, its image count on top. The ratio between the
# tallest and the shortest bar is how much more often the model sees the common class in training.

# %%
fig = plots.plot_class_distribution(index["label"], title=f"Diagnoses · {data.name}")
plots.publish(fig, figures / "eda_class_distribution.png")
counts = index["dx"].value_counts().reindex(CLASS_NAMES, fill_value=0)
majority_share = counts.max() / counts.sum()
print(f"Always answering {counts.idxmax()} would score accuracy {majority_share:.3f}, balanced accuracy {1 / (counts > 0).sum():.3f}.")

# %% [markdown]
# ## Several images per lesion
# Images of one lesion are near-duplicates; a split by image would put them on both sides.
#
# *Reading the figure:* how many lesions have 1, 2, 3, ... images. Every bar right of "1" is a
# group of near-duplicates that must stay on one side of the split.

# %%
fig = plots.plot_images_per_lesion(index["lesion_id"], title=f"Images per lesion · {data.name}")
plots.publish(fig, figures / "eda_images_per_lesion.png")
per_lesion = index.groupby("lesion_id").size()
print(f"{len(index)} images of {len(per_lesion)} lesions; {(per_lesion > 1).sum()} lesions have more than one image.")

# %% [markdown]
# ## The lesion-level split
# *Reading the figure:* per diagnosis, the images (left) and distinct lesions (right) in train,
# validation and test. A class with a handful of test images gets noisy per-class test numbers.

# %%
split_table = split_summary(data.split, CLASS_NAMES)
fig = plots.plot_split_counts(data.split, title=f"Images and lesions per split · {data.name}")
plots.publish(fig, figures / "eda_split_counts.png")
split_table

# %% [markdown]
# ## Patients: age, sex, site
# *Reading the figure:* age histogram stacked by diagnosis, then counts by sex and body site. A
# diagnosis concentrated in one age band or site is a shortcut a model can learn from the image.

# %%
fig = plots.plot_metadata(index, title=f"Patient metadata · {data.name}")
plots.publish(fig, figures / "eda_metadata.png")

# %% [markdown]
# ## How large are the lesions?
# *Reading the figure:* per diagnosis, the share of the image covered by the lesion (box: middle
# half, dots: single images). Small lesions are where segmentation at low resolution suffers most.

# %%
areas, area_labels = lesion_area_fractions(index, max_images=max_mask_images, seed=seed)
if len(areas):
    fig = plots.plot_mask_area(areas, area_labels, title=f"Lesion share of the image · {data.name}")
    plots.publish(fig, figures / "eda_mask_area.png")
    print(f"median lesion share {np.median(areas):.2f} over {len(areas)} masks")
else:
    print("This data set has no masks: there are no lesion sizes to show.")

# %% [markdown]
# ## What each diagnosis looks like (expert mask in green)
# *Reading the figure:* one row per diagnosis, the expert's lesion border in green. Look for how
# alike the classes are, and for hairs, rulers and vignetting the model has to ignore.

# %%
images, masks, labels = sample_per_class(index, per_class=per_class, seed=seed)
fig = plots.plot_sample_grid(images, labels, masks=masks, per_class=per_class,
                               title=f"Examples per diagnosis · {data.name}")
plots.publish(fig, figures / "eda_samples.png")

# %% [markdown]
# ## Conclusion
# Computed from the numbers above.

# %%
from IPython.display import Markdown

thin = [f"{k} ({v})" for k, v in split_table["test_images"].drop("total").items() if 0 < v < 10]
conclusion = (f"**{counts.idxmax()}** makes up {majority_share:.0%} of the {len(index)} images: read balanced accuracy "
              f"(chance {1 / (counts > 0).sum():.2f}), not accuracy. {(per_lesion > 1).sum()} of {len(per_lesion)} lesions "
              "have more than one image, which is why the split is by lesion."
              + (f" The test split holds fewer than 10 images of {', '.join(thin)}: their per-class numbers will be noisy."
                 if thin else "") + (" These numbers come from the **synthetic demo data**." if data.synthetic else ""))
Markdown(conclusion)

# %%
report.write_section(reports, "01_eda", "Data", f"""
**{data.name}**: {len(index)} images of {index['lesion_id'].nunique()} lesions, labels from
`{data.describe()['label_file']}`. Always answering **{counts.idxmax()}** scores accuracy
{majority_share:.3f} (balanced accuracy {1 / (counts > 0).sum():.3f}): the baseline for every accuracy below.

![classes](figures/eda_class_distribution.png)
![images per lesion](figures/eda_images_per_lesion.png)

Split by lesion (fractions {split_fractions}, seed {seed}; stored in `{split_path}`):

{report.markdown_table(split_table)}

![split](figures/eda_split_counts.png)
![metadata](figures/eda_metadata.png)
![mask area](figures/eda_mask_area.png)
![samples](figures/eda_samples.png)

**Conclusion.** {conclusion}
""", params=params, data=data.describe())
