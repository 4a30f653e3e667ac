"""Face-swap / deepfake detection: offline face detection and crops, Self-Blended Images for faces,
and the AdapGRnet dual-stream classifier with a localisation head."""
