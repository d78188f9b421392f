"""Everything between a folder of files and a batch on the device: reading images and masks
(`imageio`), checking a data set's layout (`layout`), unpacking the official downloads
(`prepare`), the lesion-level split (`splits`), the preprocessed-array cache (`cache`), the
datasets and loaders (`datasets`) and the one call the notebooks use (`loading.load_data`)."""
