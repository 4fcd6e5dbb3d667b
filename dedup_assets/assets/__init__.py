from dedup_assets.assets.blob_inventory import blob_inventory
from dedup_assets.assets.wavelet_hashes import wavelet_hashes

pipeline_assets = [blob_inventory, wavelet_hashes]
