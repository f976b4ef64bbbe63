"""MLX for mlx-lm."""
