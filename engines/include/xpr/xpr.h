/*
 * xpr: C API of the X-Pruning runtime that mammography viewers embed.
 *
 * One engine = one export bundle (a folder written by `xpr export`: manifest.json, model.onnx,
 * optionally TensorRT engine files). The engine checks the whole bundle before using any of it
 * (format 2: the manifest's seal, plain relative paths, exactly the listed files and no links,
 * the SHA-256 of every file, manifest and preprocessing versions; the same rules as
 * xpr_deploy/bundle/reader.py), takes the tensor names from the manifest's `io`, applies the
 * bundle's preprocessing to the decoded 16-bit stored pixels of the two views of a breast (CC,
 * MLO), runs the model and keeps the outputs: malignancy probability, logits and, when the
 * bundle was exported with `--with-selection`, the kept window indices of every pruned block.
 *
 * Every function returns an xpr_status; on anything but XPR_OK, xpr_last_error() returns a
 * message naming the file or input and the problem. No function throws or aborts on bad input.
 * An engine is not thread-safe: use one engine per thread (they may share nothing).
 */
#ifndef XPR_XPR_H
#define XPR_XPR_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(XPR_BUILDING_LIBRARY)
#    define XPR_API __declspec(dllexport)
#  else
#    define XPR_API __declspec(dllimport)
#  endif
#else
#  define XPR_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define XPR_VERSION_STRING "0.1.0"

typedef enum xpr_status {
  XPR_OK = 0,
  XPR_ERR_ARGUMENT = 1,    /* null pointer, bad size, bad option */
  XPR_ERR_IO = 2,          /* a bundle file is missing or unreadable */
  XPR_ERR_MANIFEST = 3,    /* manifest.json malformed or missing a required field */
  XPR_ERR_HASH = 4,        /* a file's SHA-256 differs from the manifest, or the manifest's
                              content from its own seal (manifest_sha256: a field was edited) */
  XPR_ERR_VERSION = 5,     /* unsupported manifest / preprocessing / engine version */
  XPR_ERR_IMAGE = 6,       /* the image cannot be preprocessed (attributes, empty breast...) */
  XPR_ERR_BACKEND = 7,     /* ONNX Runtime / TensorRT failed */
  XPR_ERR_UNSUPPORTED = 8, /* a backend or feature that this build does not include */
  XPR_ERR_STATE = 9,       /* e.g. reading outputs before a successful xpr_run */
  XPR_ERR_BUNDLE = 10      /* the bundle folder holds a symbolic link, a special file or a file
                              its manifest does not list */
} xpr_status;

typedef enum xpr_backend {
  XPR_BACKEND_AUTO = 0,     /* TensorRT when built, a GPU is present and the bundle has an
                               engine for it; otherwise ONNX Runtime */
  XPR_BACKEND_ONNXRUNTIME = 1,
  XPR_BACKEND_TENSORRT = 2
} xpr_backend;

typedef enum xpr_device {
  XPR_DEVICE_AUTO = 0, /* ONNX Runtime: CUDA provider when available, else CPU */
  XPR_DEVICE_CPU = 1,
  XPR_DEVICE_CUDA = 2  /* fail when the CUDA provider cannot be created */
} xpr_device;

typedef enum xpr_voi_function {
  XPR_VOI_LINEAR = 0, /* DICOM default */
  XPR_VOI_LINEAR_EXACT = 1,
  XPR_VOI_SIGMOID = 2
} xpr_voi_function;

/* One decoded view and the DICOM attributes the preprocessing needs.
 * Fill it with xpr_image_init() first, then set what the file has. */
typedef struct xpr_image {
  const uint16_t* pixels;     /* rows*cols stored values, row-major (Pixel Data, one frame) */
  int32_t rows, cols;
  int32_t bits_stored;        /* (0028,0101); values are masked to it (and sign-extended) */
  int32_t is_signed;          /* PixelRepresentation 1: pixels are two's complement */
  int32_t monochrome1;        /* PhotometricInterpretation MONOCHROME1 */
  double rescale_slope;       /* 1 when absent */
  double rescale_intercept;   /* 0 when absent */
  int32_t has_window;         /* WindowCenter/WindowWidth present (first value of each) */
  double window_center, window_width;
  int32_t voi_function;       /* an xpr_voi_function (int32_t: any value from C is defined) */
  int32_t has_padding_value;  /* PixelPaddingValue present */
  int32_t padding_value;      /* as a stored value (signed when is_signed) */
  int32_t has_padding_range_limit;
  int32_t padding_range_limit;
  int32_t has_modality_lut_sequence; /* set when (0028,3000) is present: unsupported, error */
  const char* name;           /* used in error messages, e.g. the file path; may be NULL */
} xpr_image;

typedef struct xpr_options {
  int32_t backend;            /* an xpr_backend */
  int32_t device;             /* an xpr_device */
  int32_t intra_op_threads;   /* ONNX Runtime; 0 = its default */
  int32_t verify_hashes;      /* 1 (default): check the SHA-256 of every bundle file; 0 skips only
                                 that (the seal, paths and file list are always checked) */
  const char* plugin_library; /* TensorRT: overrides the bundle's plugin library; may be NULL */
  const char* graph;          /* which graph ONNX Runtime runs: NULL or "" = the bundle's `model`;
                                 "fp32", "fp16" or "int8" = its `graphs` entry of that precision
                                 (`xpr export --int8` adds the INT8 QDQ graph, never served by
                                 default). Set, it selects ONNX Runtime: XPR_BACKEND_TENSORRT with a
                                 graph is XPR_ERR_ARGUMENT; a precision the bundle lacks is
                                 XPR_ERR_UNSUPPORTED. (A new last field: callers built against an
                                 older xpr.h must be rebuilt.) */
} xpr_options;

typedef struct xpr_selection_info {
  const char* view;           /* "cc" or "mlo" */
  int32_t stage;              /* 1..4 */
  int32_t block;              /* 0-based index within the stage */
  int32_t grid_rows, grid_cols; /* window grid of the block (num windows = rows * cols) */
  int32_t shift_rows;         /* cyclic shift in tokens per dimension (windows are numbered */
  int32_t shift_cols;         /* on the map rolled by -shift; 0 where the grid is one window) */
  int32_t token_stride;       /* input pixels per token at this stage (4, 8, 16, 32) */
  int32_t window;             /* window size in tokens (7) */
  int32_t k;                  /* number of kept windows */
} xpr_selection_info;

typedef struct xpr_engine xpr_engine;

XPR_API const char* xpr_version(void);
/* The last error of the calling thread; "" when none. Valid until the next xpr call. */
XPR_API const char* xpr_last_error(void);
XPR_API const char* xpr_status_name(xpr_status status);

XPR_API void xpr_image_init(xpr_image* image);
XPR_API void xpr_options_init(xpr_options* options);

/* Opens the bundle folder. options may be NULL (defaults). On failure *engine is NULL. */
XPR_API xpr_status xpr_create(const char* bundle_dir, const xpr_options* options, xpr_engine** engine);
XPR_API void xpr_destroy(xpr_engine* engine);

/* Model input size (rows, cols) and the backend actually used ("onnxruntime-cpu", ...). */
XPR_API xpr_status xpr_input_size(const xpr_engine* engine, int32_t* rows, int32_t* cols);
XPR_API const char* xpr_backend_name(const xpr_engine* engine);
/* The bundle file the backend runs, relative to the bundle ("model.int8.onnx", an engine plan...). */
XPR_API const char* xpr_model_file(const xpr_engine* engine);

/* The bundle's preprocessing of one view into out[rows*cols] (float32, the model input). */
XPR_API xpr_status xpr_preprocess(const xpr_engine* engine, const xpr_image* image, float* out, size_t out_count);

/* Preprocesses both views and runs the model; outputs stay in the engine until the next run. */
XPR_API xpr_status xpr_run(xpr_engine* engine, const xpr_image* cc, const xpr_image* mlo);
/* Runs on already preprocessed inputs (rows*cols floats each). */
XPR_API xpr_status xpr_run_preprocessed(xpr_engine* engine, const float* cc, const float* mlo, size_t count);

XPR_API xpr_status xpr_get_prob(const xpr_engine* engine, float* prob);
XPR_API xpr_status xpr_get_logits(const xpr_engine* engine, float* logits, size_t count);
XPR_API int32_t xpr_num_classes(const xpr_engine* engine);

/* Window selection of the last run: one entry per pruned block and view (0 without
 * selection outputs). indices points into the engine, valid until the next run. */
XPR_API int32_t xpr_num_selections(const xpr_engine* engine);
XPR_API xpr_status xpr_get_selection(const xpr_engine* engine, int32_t i, xpr_selection_info* info,
                                     const int64_t** indices);

/* Fraction of pruned blocks that kept each token of the stage-1 token grid of a view
 * ("cc" or "mlo"), on a grid of (rows/4) x (cols/4) values in [0, 1], row-major. */
XPR_API xpr_status xpr_selection_heatmap(const xpr_engine* engine, const char* view, float* out, size_t out_count,
                                         int32_t* grid_rows, int32_t* grid_cols);

/* Operating points: thresholds chosen on the validation split for named targets ("youden",
 * "sens=0.90", "spec=0.90", ...), read from the manifest's operating_points. An engine starts at
 * the bundle's default (manifest operating_point; a bundle without points has one, its threshold,
 * named after its threshold_method). The decision is malignant when prob >= threshold. */
XPR_API int32_t xpr_num_operating_points(const xpr_engine* engine);
/* The i-th named point (sorted by name); *name points into the engine, valid while it lives. */
XPR_API xpr_status xpr_get_operating_point(const xpr_engine* engine, int32_t i, const char** name, double* threshold);
/* Chooses the point later decisions use; name NULL: the bundle's default. An unknown name is
 * XPR_ERR_ARGUMENT (the message lists the bundle's points) and leaves the current one. */
XPR_API xpr_status xpr_set_operating_point(xpr_engine* engine, const char* name);
/* The current point: its name (into the engine) and threshold; either pointer may be NULL. */
XPR_API xpr_status xpr_operating_point(const xpr_engine* engine, const char** name, double* threshold);
/* The last run's decision at the current point: 1 malignant (prob >= threshold), 0 benign. */
XPR_API xpr_status xpr_get_decision(const xpr_engine* engine, int32_t* malignant);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* XPR_XPR_H */
