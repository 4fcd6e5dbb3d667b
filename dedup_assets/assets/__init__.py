from dedup_assets.assets.blob_inventory import blob_inventory
from dedup_assets.assets.clusters import clusters
from dedup_assets.assets.color_candidates import color_candidates
from dedup_assets.assets.duplicate_actions import duplicate_actions
from dedup_assets.assets.duplicate_gallery import duplicate_gallery
from dedup_assets.assets.embeddings import embeddings
from dedup_assets.assets.keep_drop_manifest import keep_drop_manifest
from dedup_assets.assets.verified_pairs import verified_pairs
from dedup_assets.assets.wavelet_hashes import wavelet_hashes

# The per-batch cascade, in dependency order.
pipeline_assets = [blob_inventory, wavelet_hashes, color_candidates, embeddings, verified_pairs, clusters]
# Over the whole corpus, after the batches: what a person reviews and acts on.
review_assets = [keep_drop_manifest, duplicate_gallery, duplicate_actions]
