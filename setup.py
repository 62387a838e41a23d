"""ascend-v4: an Ascend-native deployment toolkit for DeepSeek-V4-class MoE models."""
from setuptools import find_packages, setup

setup(
    name="ascend-v4",
    version="0.1.0",
    description="DeepSeek-V4 on MindSpore: model cells, AscendC operators, graph compiler, CLI",
    python_requires=">=3.9",
    packages=find_packages(include=["ascend_v4*", "custom_ops*", "graph_compile*", "tools*"]),
    package_data={
        "ascend_v4": ["presets/*.yaml", "presets/tokenizer/*.json", "kernels/*.cpp"],
        "custom_ops": ["**/*.h", "**/*.cpp", "**/*.hpp", "**/*.yaml"],
        "tools": ["**/*.yaml", "bench/configs/*.json"],
        "graph_compile": ["*.yaml"],
    },
    include_package_data=True,
    install_requires=[
        "mindspore==2.10.0",
        "numpy==1.26.*",        # mindspore 2.10 raises SystemError with numpy 2
        "ml_dtypes>=0.4,<0.6",
        "onnx==1.23.*",
        "onnxruntime==1.31.*",
        "safetensors>=0.4",
        "pyyaml>=6",
        "click>=8.1",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "tokenizers>=0.15",
        "fastapi>=0.115,<1",      # the server's ASGI app (ascend_v4/serve)
        "uvicorn>=0.30,<1",
        "prometheus_client>=0.20,<1",
        "jinja2>=3.1,<4",         # chat templates of tokenizer_config.json
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3.5,<4", "openai>=1.40,<4", "httpx>=0.27,<1"]},
    entry_points={"console_scripts": ["ascend-v4=tools.cli:main"]},
)
