from dedup_assets.assets.blob_inventory import blob_inventory
from dedup_assets.assets.clusters import clusters
from dedup_assets.assets.color_candidates import ColorCandidatesConfig, color_candidates
from dedup_assets.assets.duplicate_actions import DuplicateActionsConfig, duplicate_actions
from dedup_assets.assets.duplicate_gallery import GalleryConfig, duplicate_gallery
from dedup_assets.assets.embeddings import EmbeddingsConfig, embeddings
from dedup_assets.assets.keep_drop_manifest import keep_drop_manifest
from dedup_assets.assets.verified_pairs import VerifiedPairsConfig, verified_pairs
from dedup_assets.assets.wavelet_hashes import WaveletHashConfig, wavelet_hashes

# The per-batch cascade, in dependency order.
pipeline_assets = [blob_inventory, wavelet_hashes, color_candidates, embeddings, verified_pairs, clusters]
# Over the whole corpus, after the batches: what a person reviews and acts on.
review_assets = [keep_drop_manifest, duplicate_gallery, duplicate_actions]
# Each configurable asset's settings (`ops: {<asset>: {config: ...}}`). Dagster checks a
# run config's names and types at launch but the settings' ranges only as a step starts:
# `dedup run --config` checks them all before any batch runs.
run_settings = {"wavelet_hashes": WaveletHashConfig, "color_candidates": ColorCandidatesConfig,
                "embeddings": EmbeddingsConfig, "verified_pairs": VerifiedPairsConfig,
                "duplicate_gallery": GalleryConfig, "duplicate_actions": DuplicateActionsConfig}
