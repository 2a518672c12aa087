"""Stage 1: discover and fingerprint the raw images; unusable files go to `rejected_images`."""

import dagster as dg

from imgdedup_pipeline.assets.metadata import table_metadata
from imgdedup_pipeline.core.catalog import build_catalog
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource


@dg.multi_asset(
    outs={
        "raw_images": dg.AssetOut(
            description="Every decodable image under the image root: path, size, file and pixel hashes."
        ),
        "rejected_images": dg.AssetOut(
            description="Files with an image extension that could not be used, each with a reason."
        ),
    },
    group_name="dedup",
)
def discover_raw_images(
    context: dg.AssetExecutionContext, image_store: ImageStoreResource, output_store: OutputStoreResource
):
    # The previous catalog (per image root) lets a rerun skip decoding files that did not change.
    previous = output_store.read_catalog(image_store.root, context.log.warning)

    # The output folder may lie under the image root (its thumbnails and exports are no input).
    discovered = image_store.discover(excluded_folders=[output_store.out_dir])
    context.log.info(f"discovered {len(discovered)} files with image extensions under {image_store.root}")
    images, rejected = build_catalog(
        image_store.root,
        discovered,
        previous=previous,
        max_pixels=image_store.max_pixels,
        workers=image_store.decode_workers,
        progress=lambda done, total: context.log.info(f"decoded {done}/{total} files"),
    )
    output_store.write_catalog(image_store.root, images)
    output_store.write_table("rejected.csv", rejected[["path", "reason", "detail"]], run_id=context.run_id)
    rejected_csv = output_store.root / "rejected.csv"  # published with the rest of the set

    yield dg.Output(
        images,
        output_name="raw_images",
        metadata=table_metadata(
            images,
            distinct_pixel_hashes=int(images["pixel_hash"].nunique()),
            image_root=dg.MetadataValue.path(str(image_store.root)),
            discovered=len(discovered),
        ),
    )
    reasons = rejected["reason"].value_counts().to_dict()
    yield dg.Output(
        rejected,
        output_name="rejected_images",
        metadata=table_metadata(
            rejected, reasons=dg.MetadataValue.json(reasons), export=dg.MetadataValue.path(str(rejected_csv))
        ),
    )
