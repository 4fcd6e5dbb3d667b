from dedup_assets.assets.blob_inventory import blob_inventory
from dedup_assets.assets.clusters import clusters
from dedup_assets.assets.color_candidates import color_candidates
from dedup_assets.assets.embeddings import embeddings
from dedup_assets.assets.verified_pairs import verified_pairs
from dedup_assets.assets.wavelet_hashes import wavelet_hashes

# In dependency order.
pipeline_assets = [blob_inventory, wavelet_hashes, color_candidates, embeddings, verified_pairs, clusters]
